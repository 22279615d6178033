"""Query enhancement: rewrite the question with an LLM, retrieve for every rewrite, fuse.

:class:`QueryEnhancingRetriever` wraps any LlamaIndex retriever and any LlamaIndex LLM.
For each query it asks the LLM, concurrently and under a timeout, for the variants of
the enabled methods:

* ``"hyde"`` (HyDE, manifest ``hypotheticalDocument``): a short hypothetical passage
  answering the question; it is searched as a query of its own (for a vector retriever
  its embedding lands near real answers; for BM25 it brings answer vocabulary).
* ``"decomposition"`` (``queryDecomposition``): up to ``max_sub_questions`` simpler
  sub-questions; each is searched and the lists are merged.
* ``"expansion"`` (``queryExpansion``): the query followed by up to ``max_expansion_terms``
  related terms (synonyms, abbreviations, error names), searched as one query.
* ``"multi_query"`` (``multiQuery``): ``num_queries`` rephrasings of the question.

The original query is always searched too. Variants equal to the query or to each other
(ignoring case, spacing and final punctuation) are dropped. All searches run concurrently
(``asyncio.gather`` over the wrapped retriever's ``aretrieve``) and the ranked lists are
fused by node id with :func:`aof_index_retrievers.fusion.fuse`: weighted reciprocal rank
fusion by default, the original query's list weighted ``original_weight`` and each
rewrite's list its method's weight, which may not exceed ``original_weight``.

**Fallback.** A method whose LLM call raises or exceeds ``timeout`` seconds contributes
nothing; if no method yields a variant, retrieval is the plain query alone. Either way
the retrieval succeeds, and what happened is recorded in a
:class:`QueryEnhancementTrace`, which is

* returned by :meth:`QueryEnhancingRetriever.retrieve_with_trace` /
  :meth:`~QueryEnhancingRetriever.aretrieve_with_trace` (safe under concurrency),
* kept in :attr:`QueryEnhancingRetriever.last_trace` (the most recent call; convenient
  in a notebook, racy under concurrent calls),
* emitted as a :class:`QueryEnhancementEvent` through LlamaIndex's instrumentation
  dispatcher (``llama_index.core.instrumentation``; attach an event handler to the root
  dispatcher to see it, e.g. for OpenTelemetry), inside the retriever's ``retrieve`` span,
* logged on the ``aof_index_retrievers.query_enhancement`` logger: a WARNING naming each
  failed method and its error (never the query text), DEBUG with the variants.

Failures of the wrapped retriever are not hidden: if the original query's search raises,
the error propagates; a failed search for a rewrite is dropped and recorded in the trace.

**Timeouts and sync LLMs.** The timeout bounds each LLM call with ``asyncio.wait_for``.
An LLM without a native async client (a ``CustomLLM`` that does not override
``acomplete``/``achat``, e.g. a local llama.cpp model) is called in a daemon thread so
that the calls still overlap and the timeout still returns control, from ``aretrieve``
and ``retrieve`` alike; the abandoned thread finishes its generation in the background.

Example::

    from aof_index_retrievers import BM25Retriever, QueryEnhancingRetriever

    retriever = QueryEnhancingRetriever(
        BM25Retriever(keyword_index, similarity_top_k=10),
        llm,                                  # any LlamaIndex LLM
        methods=["hyde", "multi_query"],
        num_queries=3,
        timeout=10.0,
        similarity_top_k=5,
    )
    nodes, trace = retriever.retrieve_with_trace("why do my pods keep restarting?")
    print(trace.fallback, [s.query for s in trace.searches])
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar, get_args

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms import LLM, CustomLLM
from llama_index.core.prompts import BasePromptTemplate, PromptTemplate
from llama_index.core.prompts.mixin import PromptDictType
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index_instrumentation import get_dispatcher

from aof_index_retrievers.fusion import FusionMethod, Normalization, fuse

__all__ = [
    "DECOMPOSITION_PROMPT",
    "EXPANSION_PROMPT",
    "HYDE_PROMPT",
    "MANIFEST_METHODS",
    "MULTI_QUERY_PROMPT",
    "EnhancementMethod",
    "MethodOutcome",
    "QueryEnhancementEvent",
    "QueryEnhancementTrace",
    "QueryEnhancingRetriever",
    "SearchRecord",
    "parse_list",
    "parse_terms",
]

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

EnhancementMethod = Literal["hyde", "decomposition", "expansion", "multi_query"]
"""The query enhancement methods, by their Python names."""

_METHODS: tuple[str, ...] = get_args(EnhancementMethod)

MANIFEST_METHODS: Mapping[str, EnhancementMethod] = {
    "hypotheticalDocument": "hyde",
    "queryDecomposition": "decomposition",
    "queryExpansion": "expansion",
    "multiQuery": "multi_query",
}
"""The AOF manifest names (``queryEnhancement.methods``, ``multiQuery``) of the methods.
``QueryEnhancingRetriever(methods=...)`` accepts either spelling."""

# --- prompts ------------------------------------------------------------------------------
# Kept short and explicit about the output format; the parsers below still accept the
# usual deviations (numbering, bullets, a preamble line, quotes, <think> blocks).

HYDE_PROMPT = PromptTemplate(
    "Write a short passage (3 to 5 sentences) that answers the question below, as it "
    "could appear in technical documentation or an operations runbook. Use the specific "
    "terms such a document would use. Answer with the passage only.\n\n"
    "Question: {query}\n\n"
    "Passage:"
)
"""HyDE: a hypothetical answer passage. Variables: ``query``."""

DECOMPOSITION_PROMPT = PromptTemplate(
    "Break the question below into at most {max_sub_questions} simpler, self-contained "
    "sub-questions that together cover it; each must make sense without the others. If "
    "the question is already simple, write it as the only sub-question. Write one "
    "sub-question per line, numbered, with no other text.\n\n"
    "Question: {query}\n\n"
    "Sub-questions:"
)
"""Query decomposition into sub-questions. Variables: ``query``, ``max_sub_questions``."""

EXPANSION_PROMPT = PromptTemplate(
    "List up to {max_terms} search terms related to the query below that a relevant "
    "document might contain but the query does not: synonyms, abbreviations, related "
    "technical terms, component and error names. Write them comma-separated on one line, "
    "with no other text.\n\n"
    "Query: {query}\n\n"
    "Terms:"
)
"""Query expansion with related terms. Variables: ``query``, ``max_terms``."""

MULTI_QUERY_PROMPT = PromptTemplate(
    "Write {num_queries} different search queries that ask for the same information as "
    "the query below, each phrased differently (other words, more specific terms, another "
    "angle). Write one query per line, numbered, with no other text.\n\n"
    "Query: {query}\n\n"
    "Queries:"
)
"""Multi-query rewrites. Variables: ``query``, ``num_queries``."""

_PROMPT_KEYS: Mapping[EnhancementMethod, str] = {
    "hyde": "hyde_prompt",
    "decomposition": "decomposition_prompt",
    "expansion": "expansion_prompt",
    "multi_query": "multi_query_prompt",
}

# --- parsing ------------------------------------------------------------------------------

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_ITEM = re.compile(
    r"""^(?:
        [-*•+–]\s+                                        # bullet
      | \(?\d{1,3}[.):\]]\s*                              # 1.  1)  (1)  1:  1]
      | (?:q|query|question|sub-?question|rewrite)\s*\d{0,3}\s*[:.)-]\s*  # Query 1:
    )(?P<text>.+)$""",
    re.IGNORECASE | re.VERBOSE,
)
_LABEL = re.compile(
    r"^(?:passage|answer|terms|keywords|queries|sub-?questions)\s*:\s*", re.IGNORECASE
)
_WRAPPERS = ("**", "__", '"', "'", "`", "“", "”")


def _strip_reasoning(text: str) -> str:
    """Drop ``<think>…</think>`` blocks (reasoning models) and markdown code fences."""
    text = _THINK.sub("", text)
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith("```"))


def _clean(item: str) -> str:
    item = item.strip()
    changed = True
    while changed and item:
        changed = False
        for mark in _WRAPPERS:
            if len(item) > 2 * len(mark) and item.startswith(mark) and item.endswith(mark):
                item = item[len(mark) : -len(mark)].strip()
                changed = True
        if item[:1] in "“\"'" and item[-1:] in "”\"'" and len(item) > 2:
            item = item[1:-1].strip()
            changed = True
    return " ".join(item.split())


def _key(text: str) -> str:
    """Comparison key: case, spacing and final punctuation ignored."""
    return " ".join(text.lower().split()).rstrip(" ?.!;:")


def _dedupe(items: Iterable[str], seen: set[str] | None = None) -> list[str]:
    seen = set() if seen is None else seen
    out = []
    for item in items:
        key = _key(item)
        if key and key not in seen:
            seen.add(key)
            out.append(item)
    return out


def parse_list(text: str, limit: int | None = None) -> list[str]:
    """Parse an LLM's list answer into items, deduplicated, at most ``limit`` of them.

    Accepts numbered (``1.``, ``1)``, ``(1)``), bulleted (``-``, ``*``, ``•``) and labelled
    (``Query 1:``) lines, or plain lines. When some lines are list items, the other lines
    (a preamble such as "Here are three queries:") are ignored; otherwise every non-empty
    line not ending with ``:`` is an item. Markdown emphasis, quotes and ``<think>`` blocks
    are removed.
    """
    lines = [line.strip() for line in _strip_reasoning(text).splitlines()]
    lines = [_LABEL.sub("", line) for line in lines if line]
    matches = [_ITEM.match(line) for line in lines]
    if any(matches):
        items = [m.group("text") for m in matches if m]
    else:
        items = [line for line in lines if not line.endswith(":")]
    cleaned = _dedupe(_clean(item) for item in items)
    return cleaned[:limit] if limit is not None else cleaned


def parse_terms(text: str, limit: int | None = None) -> list[str]:
    """Parse an LLM's list of terms: comma-, semicolon- or line-separated, with or without
    bullets or numbers, an optional ``Terms:`` label; deduplicated, at most ``limit``."""
    terms: list[str] = []
    for raw in _strip_reasoning(text).splitlines():
        line = _LABEL.sub("", raw.strip())
        match = _ITEM.match(line)
        line = match.group("text") if match else line
        terms.extend(re.split(r"[,;]", line))
    cleaned = _dedupe(_clean(term).rstrip(".") for term in terms)
    return cleaned[:limit] if limit is not None else cleaned


# --- the trace ----------------------------------------------------------------------------

OutcomeStatus = Literal["ok", "empty", "timeout", "error"]


@dataclass(frozen=True)
class MethodOutcome:
    """What one enhancement method produced for one query."""

    method: EnhancementMethod
    status: OutcomeStatus
    """``ok``: variants produced; ``empty``: the LLM answered but nothing new could be
    used (no parsable item, or only repeats of the query); ``timeout``/``error``: the LLM
    call failed, the method contributes nothing."""
    variants: tuple[str, ...] = ()
    """The queries this method added (after parsing and deduplication)."""
    error: str | None = None
    """For ``timeout``/``error``: the exception type and message (truncated)."""
    seconds: float = 0.0
    """Wall time of the LLM call."""


@dataclass(frozen=True)
class SearchRecord:
    """One search that was run: the original query or a variant."""

    method: EnhancementMethod | Literal["original"]
    query: str
    weight: float
    """Its list's weight in the fusion."""
    hits: int | None
    """How many nodes it returned; ``None`` when the search raised."""
    error: str | None = None


@dataclass(frozen=True)
class QueryEnhancementTrace:
    """What query enhancement did for one retrieval."""

    query: str
    methods: tuple[MethodOutcome, ...]
    searches: tuple[SearchRecord, ...]
    """Original query first, then the variants, in method order."""
    fusion: str
    fallback: bool
    """True when an LLM call failed (timeout or error) and no method yielded a variant,
    so the plain query alone was searched."""
    results: int = 0
    """How many fused nodes were returned."""

    @property
    def failed(self) -> tuple[MethodOutcome, ...]:
        """The methods whose LLM call timed out or raised."""
        return tuple(m for m in self.methods if m.status in ("timeout", "error"))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view (for logs, traces and API responses)."""
        data = asdict(self)
        data["failed"] = [m.method for m in self.failed]
        return data


class QueryEnhancementEvent(BaseEvent):
    """Instrumentation event emitted once per retrieval of a
    :class:`QueryEnhancingRetriever`, carrying its :class:`QueryEnhancementTrace`."""

    trace: QueryEnhancementTrace

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "QueryEnhancementEvent"


_TRACE_SINK: contextvars.ContextVar[list[QueryEnhancementTrace] | None] = contextvars.ContextVar(
    "aof_query_enhancement_trace_sink", default=None
)


# --- the retriever ------------------------------------------------------------------------


@dataclass
class _Variant:
    method: EnhancementMethod | Literal["original"]
    bundle: QueryBundle
    weight: float


@dataclass
class _Generated:
    outcomes: list[MethodOutcome] = field(default_factory=list)
    variants: list[_Variant] = field(default_factory=list)


class QueryEnhancingRetriever(BaseRetriever):
    """Retrieve with LLM-generated query variants (HyDE, decomposition, expansion,
    multi-query) alongside the original query, fused by node id. See the module docstring.

    Args:
        retriever: The retriever searched for the query and every variant (any LlamaIndex
            retriever; a natively async one lets the searches overlap).
        llm: The LLM that writes the variants (any LlamaIndex LLM).
        methods: Enabled methods, by Python name (``"hyde"``, ``"decomposition"``,
            ``"expansion"``, ``"multi_query"``) or manifest name (``"hypotheticalDocument"``,
            ``"queryDecomposition"``, ``"queryExpansion"``, ``"multiQuery"``). Empty: the
            plain query only.
        num_queries: How many rewrites ``multi_query`` asks for and keeps (manifest
            ``multiQuery.queries``), in addition to the original query.
        max_sub_questions: How many sub-questions ``decomposition`` keeps.
        max_expansion_terms: How many related terms ``expansion`` appends.
        fusion: ``"rrf"`` (default), ``"linear"`` or ``"maximal"``
            (:func:`aof_index_retrievers.fusion.fuse`); the score-based ones need a
            retriever that returns scores.
        k: The RRF constant (manifest ``fusion.k``).
        normalization: Score normalisation for ``linear``/``maximal``.
        original_weight: Weight of the original query's list.
        method_weights: Weight of each list a method adds, per method (default
            ``original_weight``); none may exceed ``original_weight``. A method's
            lists share its weight each, so several rewrites together can outweigh the
            original query, as in RAG-Fusion.
        similarity_top_k: How many fused nodes to return; ``None``: as many as the longest
            single list.
        timeout: Seconds each LLM call may take before the method is abandoned.
        callback_manager: LlamaIndex callback manager.
        verbose: LlamaIndex verbosity flag.

    Raises:
        ValueError: an unknown method or fusion, a weight that is negative, not finite or
            above ``original_weight``, a non-positive count or timeout.
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        llm: LLM,
        methods: Sequence[str] = ("multi_query",),
        *,
        num_queries: int = 3,
        max_sub_questions: int = 3,
        max_expansion_terms: int = 8,
        fusion: FusionMethod = "rrf",
        k: float = 60,
        normalization: Normalization = "minmax",
        original_weight: float = 1.0,
        method_weights: Mapping[str, float] | None = None,
        similarity_top_k: int | None = None,
        timeout: float = 30.0,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        self.retriever = retriever
        self.llm = llm
        self.methods: tuple[EnhancementMethod, ...] = _normalise_methods(methods)
        for name, value in (
            ("num_queries", num_queries),
            ("max_sub_questions", max_sub_questions),
            ("max_expansion_terms", max_expansion_terms),
        ):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if similarity_top_k is not None and similarity_top_k < 1:
            raise ValueError(f"similarity_top_k must be >= 1 or None, got {similarity_top_k!r}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        if fusion not in ("rrf", "linear", "maximal"):
            raise ValueError(f"unknown fusion {fusion!r}; choose 'rrf', 'linear' or 'maximal'")
        if not (math.isfinite(k) and k >= 0):
            raise ValueError(f"k must be a finite number >= 0, got {k!r}")
        _check_weight("original_weight", original_weight)
        self.num_queries = num_queries
        self.max_sub_questions = max_sub_questions
        self.max_expansion_terms = max_expansion_terms
        self.fusion: FusionMethod = fusion
        self.k = k
        self.normalization: Normalization = normalization
        self.original_weight = float(original_weight)
        self.method_weights = _method_weights(method_weights, self.original_weight)
        self.similarity_top_k = similarity_top_k
        self.timeout = float(timeout)
        self.last_trace: QueryEnhancementTrace | None = None
        """The trace of the most recent retrieval (racy under concurrent calls: use
        :meth:`retrieve_with_trace` there)."""
        self._prompts: dict[EnhancementMethod, BasePromptTemplate] = {
            "hyde": HYDE_PROMPT,
            "decomposition": DECOMPOSITION_PROMPT,
            "expansion": EXPANSION_PROMPT,
            "multi_query": MULTI_QUERY_PROMPT,
        }
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    # --- prompts (PromptMixin: get_prompts() / update_prompts()) -------------------------

    def _get_prompts(self) -> PromptDictType:
        return {_PROMPT_KEYS[method]: prompt for method, prompt in self._prompts.items()}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        for method, key in _PROMPT_KEYS.items():
            if key in prompts:
                self._prompts[method] = prompts[key]

    # --- public API ------------------------------------------------------------------------

    def retrieve_with_trace(
        self, query: str | QueryBundle
    ) -> tuple[list[NodeWithScore], QueryEnhancementTrace]:
        """:meth:`retrieve`, also returning this call's :class:`QueryEnhancementTrace`."""
        sink: list[QueryEnhancementTrace] = []
        token = _TRACE_SINK.set(sink)
        try:
            nodes = self.retrieve(query)
        finally:
            _TRACE_SINK.reset(token)
        return nodes, sink[-1]

    async def aretrieve_with_trace(
        self, query: str | QueryBundle
    ) -> tuple[list[NodeWithScore], QueryEnhancementTrace]:
        """:meth:`aretrieve`, also returning this call's :class:`QueryEnhancementTrace`."""
        sink: list[QueryEnhancementTrace] = []
        token = _TRACE_SINK.set(sink)
        try:
            nodes = await self.aretrieve(query)
        finally:
            _TRACE_SINK.reset(token)
        return nodes, sink[-1]

    # --- BaseRetriever -----------------------------------------------------------------------

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # One code path: the async one, run to completion here (see _run_sync).
        return _run_sync(self._aretrieve(query_bundle))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        generated = await self._generate(query_bundle.query_str)
        searches = [_Variant("original", query_bundle, self.original_weight)]
        searches += generated.variants
        outcomes = await asyncio.gather(
            *(self.retriever.aretrieve(v.bundle) for v in searches), return_exceptions=True
        )
        original = outcomes[0]
        if isinstance(original, BaseException):
            raise original
        lists: list[list[NodeWithScore]] = []
        weights: list[float] = []
        records: list[SearchRecord] = []
        for variant, outcome in zip(searches, outcomes, strict=True):
            method = variant.method
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # cancellation, KeyboardInterrupt: never swallowed
                records.append(
                    SearchRecord(
                        method, variant.bundle.query_str, variant.weight, None, _err(outcome)
                    )
                )
                logger.warning(
                    "query enhancement: the search for a %s variant failed and was dropped: %s",
                    method,
                    _err(outcome),
                )
                continue
            records.append(
                SearchRecord(method, variant.bundle.query_str, variant.weight, len(outcome))
            )
            lists.append(list(outcome))
            weights.append(variant.weight)
        top_n = self.similarity_top_k
        if top_n is None:
            top_n = max((len(ranked) for ranked in lists), default=0)
        nodes = fuse(
            lists,
            self.fusion,
            weights=weights,
            k=self.k,
            normalization=self.normalization,
            top_n=top_n,
        )
        failed = any(o.status in ("timeout", "error") for o in generated.outcomes)
        trace = QueryEnhancementTrace(
            query=query_bundle.query_str,
            methods=tuple(generated.outcomes),
            searches=tuple(records),
            fusion=self.fusion,
            fallback=failed and not generated.variants,
            results=len(nodes),
        )
        self._report(trace)
        return nodes

    # --- internals -------------------------------------------------------------------------

    def _report(self, trace: QueryEnhancementTrace) -> None:
        self.last_trace = trace
        sink = _TRACE_SINK.get()
        if sink is not None:
            sink.append(trace)
        for outcome in trace.failed:
            logger.warning(
                "query enhancement: %s %s after %.1fs (%s)%s",
                outcome.method,
                "timed out" if outcome.status == "timeout" else "failed",
                outcome.seconds,
                outcome.error,
                "; falling back to the plain query" if trace.fallback else "",
            )
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "query enhancement searched %s",
                [(s.method, s.query, s.hits) for s in trace.searches],
            )
        dispatcher.event(QueryEnhancementEvent(trace=trace))

    async def _generate(self, query: str) -> _Generated:
        """Ask the LLM for every method's variants, concurrently."""
        raw = await asyncio.gather(*(self._ask(method, query) for method in self.methods))
        generated = _Generated()
        seen = {_key(query)}
        for method, (status, text, error, seconds) in zip(self.methods, raw, strict=True):
            if status != "ok":
                generated.outcomes.append(MethodOutcome(method, status, (), error, seconds))
                continue
            variants = _dedupe(self._parse(method, query, text or ""), seen)
            weight = self.method_weights[method]
            generated.variants += [_Variant(method, QueryBundle(v), weight) for v in variants]
            generated.outcomes.append(
                MethodOutcome(method, "ok" if variants else "empty", tuple(variants), None, seconds)
            )
        return generated

    async def _ask(
        self, method: EnhancementMethod, query: str
    ) -> tuple[OutcomeStatus, str | None, str | None, float]:
        prompt = self._prompts[method]
        args: dict[str, Any] = {"query": query}
        if method == "decomposition":
            args["max_sub_questions"] = self.max_sub_questions
        elif method == "expansion":
            args["max_terms"] = self.max_expansion_terms
        elif method == "multi_query":
            args["num_queries"] = self.num_queries
        started = time.monotonic()
        try:
            if _sync_only(self.llm):
                call = _in_daemon_thread(self.llm.predict, prompt, **args)
            else:
                call = self.llm.apredict(prompt, **args)
            text = await asyncio.wait_for(call, timeout=self.timeout)
        except TimeoutError:
            return "timeout", None, f"no answer within {self.timeout:g}s", _since(started)
        except Exception as exc:
            return "error", None, _err(exc), _since(started)
        return "ok", text, None, _since(started)

    def _parse(self, method: EnhancementMethod, query: str, text: str) -> list[str]:
        if method == "hyde":
            passage = " ".join(_LABEL.sub("", _strip_reasoning(text).strip()).split())
            return [_clean(passage)] if passage else []
        if method == "decomposition":
            return parse_list(text, self.max_sub_questions)
        if method == "multi_query":
            return parse_list(text, self.num_queries)
        # expansion: the query followed by the terms it does not already contain
        present = set(re.findall(r"\w+", query.lower()))
        terms = [t for t in parse_terms(text) if not set(re.findall(r"\w+", t.lower())) <= present][
            : self.max_expansion_terms
        ]
        return [f"{query} {' '.join(terms)}"] if terms else []


# --- helpers --------------------------------------------------------------------------------

_T = TypeVar("_T")


def _run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to completion from synchronous code.

    With no running event loop this is ``asyncio.run``. Inside a running loop (a notebook,
    an async web handler calling the sync API) the loop cannot be re-entered, so the
    coroutine runs on a fresh loop in a worker thread, with the caller's contextvars
    (instrumentation spans, the trace sink) copied in; this is what
    ``llama_index.core.async_utils.asyncio_run`` does for ``QueryFusionRetriever``, written
    here without its deprecated ``asyncio.get_event_loop()`` call.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="query-enhancement") as pool:
        return pool.submit(context.run, asyncio.run, coro).result()


async def _in_daemon_thread(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Run blocking ``fn`` in a daemon thread and await its result.

    Not ``asyncio.to_thread``: the loop's default executor is joined when ``asyncio.run``
    ends, so a generation abandoned after a timeout would block the sync ``retrieve``
    until it finished. A daemon thread is never joined; its late result is discarded.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()
    context = contextvars.copy_context()

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            setter(value)

    def run() -> None:
        try:
            result = context.run(fn, *args, **kwargs)
        except BaseException as exc:
            outcome: tuple[Callable[[Any], None], Any] = (future.set_exception, exc)
        else:
            outcome = (future.set_result, result)
        # RuntimeError: the loop is closed, nobody waits for this result any more
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, *outcome)

    threading.Thread(target=run, name="query-enhancement-llm", daemon=True).start()
    return await future


def _sync_only(llm: LLM) -> bool:
    """Whether ``llm``'s async methods are CustomLLM's blocking defaults (looked up by the
    class that defines them: instrumentation wraps methods, so identity checks fail)."""

    def owner(name: str) -> type | None:
        return next((c for c in type(llm).__mro__ if name in c.__dict__), None)

    return (
        isinstance(llm, CustomLLM)
        and owner("acomplete") is CustomLLM
        and owner("achat") is CustomLLM
    )


def _normalise_methods(methods: Sequence[str]) -> tuple[EnhancementMethod, ...]:
    if isinstance(methods, str):
        methods = [methods]
    out: list[EnhancementMethod] = []
    for name in methods:
        method = MANIFEST_METHODS.get(name, name)
        if method not in _METHODS:
            allowed = ", ".join([*_METHODS, *MANIFEST_METHODS])
            raise ValueError(f"unknown query enhancement method {name!r}; choose from {allowed}")
        if method not in out:
            out.append(method)  # type: ignore[arg-type]
    return tuple(out)


def _check_weight(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _method_weights(
    given: Mapping[str, float] | None, original: float
) -> dict[EnhancementMethod, float]:
    weights: dict[EnhancementMethod, float] = dict.fromkeys(_METHODS, original)  # type: ignore[arg-type]
    for name, value in (given or {}).items():
        method = MANIFEST_METHODS.get(name, name)
        if method not in _METHODS:
            raise ValueError(f"method_weights: unknown method {name!r}")
        _check_weight(f"method_weights[{name!r}]", value)
        if value > original:
            raise ValueError(
                f"method_weights[{name!r}] = {value!r} exceeds original_weight = {original!r}; "
                "a rewrite may not outweigh the original query"
            )
        weights[method] = float(value)  # type: ignore[index]
    return weights


def _err(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
