"""Fit retrieved passages into a token budget, keeping a citation on every passage.

:class:`ContextBuilder` is the last stage before the LLM (``query → retrievers → fusion →
rerank → context budget``). It counts tokens with the target model's tokenizer (tiktoken,
offline through :func:`aof_index.offline.configure_offline`, or any ``str → tokens``
function), drops duplicated and overlapping chunks (:func:`dedupe_nodes`), and fits what is
left into ``max_tokens`` with one of three strategies:

``truncate``
    Passages in rank order, whole while they fit; the first that does not fit is cut at
    the last sentence end that fits (at a word boundary only when not even one sentence
    fits), and nothing follows it.
``prioritize``
    Passages by score, whole only: a passage that does not fit is skipped and later,
    shorter ones still get in. A passage is cut only when no whole passage fits at all.
``summarize``
    When the passages overflow, an LLM condenses each one that is longer than its share
    of the budget; the result is then fitted as ``truncate`` does. When the LLM fails the
    builder falls back to ``truncate`` and logs why.

Every passage is rendered as ``[n] (source: <label>)`` followed by its text, so an answer
can cite ``[n]``; the rendered header counts towards the budget.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, model_validator
from llama_index.core.llms import LLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle, TextNode

from aof_index.errors import ManifestError, ManifestIssue
from aof_index.offline import configure_offline

if TYPE_CHECKING:
    from aof_index.spec.agent import AgentRag

__all__ = [
    "BuiltContext",
    "ContextBuilder",
    "ContextStrategy",
    "Passage",
    "dedupe_nodes",
    "field_error",
    "passage_source",
    "tiktoken_counter",
]

logger = logging.getLogger(__name__)

ContextStrategy = Literal["truncate", "summarize", "prioritize"]
"""How :class:`ContextBuilder` fits passages into the budget (see the module docstring)."""

_STRATEGY_FIELD = "rag.retrieval.contextOptimization.strategy"
_MAX_TOKENS_FIELD = "rag.retrieval.contextOptimization.maxTokens"

SUMMARY_PROMPT = (
    "Condense the passage below to at most {words} words, keeping every fact that helps "
    "answer the question (commands, names, numbers, error messages). Write plain sentences, "
    "no preamble.\n\nQuestion: {question}\n\nPassage:\n{text}\n\nCondensed passage:"
)

# A sentence ends after . ! or ? followed by white space, or at a line break. The same rule
# as aof_index.postprocessors.sentence, but kept as offsets into the original text so a cut
# keeps the text exactly as written.
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")


def field_error(component: str, path: str, value: object, message: str) -> ManifestError:
    """A :class:`~aof_index.errors.ManifestError` about one manifest field.

    ``path`` is the camelCase field path (e.g. ``rag.retrieval.rerank.model``), ``message``
    says what is allowed and how to fix it; ``value`` is the bad value.
    """
    return ManifestError(component, [ManifestIssue(path=path, message=message, value=value)])


def tiktoken_counter(model: str = "gpt-4o") -> Callable[[str], int]:
    """Token counter of an OpenAI model (or a tiktoken encoding name, e.g. ``cl100k_base``).

    Works offline: :func:`~aof_index.offline.configure_offline` points tiktoken at the
    encodings llama-index-core ships (cl100k_base, o200k_base).
    """
    configure_offline()
    import tiktoken

    try:
        encoding = tiktoken.encoding_for_model(model)
    except KeyError:
        encoding = tiktoken.get_encoding(model)
    return lambda text: len(encoding.encode(text, disallowed_special=()))


@functools.lru_cache(maxsize=8)
def _cached_counter(model: str) -> Callable[[str], int]:
    return tiktoken_counter(model)


def passage_source(node: BaseNode) -> str:
    """The citation label of a node: ``source — heading`` from its metadata, else its
    document id, else its node id."""
    meta = node.metadata
    source = str(
        meta.get("source") or meta.get("file_path") or meta.get("url") or node.ref_doc_id or ""
    )
    source = source or node.node_id
    heading = meta.get("heading") or meta.get("title") or ""
    return f"{source} — {heading}" if heading else source


def _doc_key(node: BaseNode) -> str | None:
    meta = node.metadata
    key = node.ref_doc_id or meta.get("source") or meta.get("file_path")
    return str(key) if key else None


def _span(node: BaseNode) -> tuple[int, int] | None:
    if not isinstance(node, TextNode):
        return None
    start, end = node.start_char_idx, node.end_char_idx
    if start is None or end is None or end <= start:
        return None
    return start, end


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < 3:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def _with_text(node: BaseNode, text: str, span: tuple[int, int] | None = None) -> BaseNode:
    """A copy of ``node`` (same id, metadata and relationships) holding ``text``."""
    if not isinstance(node, TextNode):
        node = TextNode(
            id_=node.node_id,
            text=node.get_content(metadata_mode=MetadataMode.NONE),
            metadata=dict(node.metadata),
            relationships=dict(node.relationships),
        )
    update: dict[str, object] = {"text": text}
    if span is not None:
        update["start_char_idx"], update["end_char_idx"] = span
    return node.model_copy(update=update)


def dedupe_nodes(
    nodes: Sequence[NodeWithScore],
    *,
    overlap: float = 0.5,
    similarity: float = 0.9,
    trim: bool = True,
) -> tuple[list[NodeWithScore], list[NodeWithScore]]:
    """Drop near-duplicates and overlapping chunks; return ``(kept, dropped)``.

    Nodes are visited in the given (rank) order and compared with those already kept:

    - same document (``ref_doc_id``, else ``source``/``file_path`` metadata) and
      overlapping character offsets (``start_char_idx``/``end_char_idx``) covering at least
      ``overlap`` of the later node: the later node is dropped;
    - a smaller overlap is cut off the later node's text (when ``trim`` and its text
      matches its offsets), so the shared characters appear once;
    - texts whose word-trigram Jaccard similarity is at least ``similarity`` (the same
      paragraph ingested twice, from two sources): the later one is dropped.
    """
    kept: list[NodeWithScore] = []
    dropped: list[NodeWithScore] = []
    kept_shingles: list[set[tuple[str, ...]]] = []
    for hit in nodes:
        node = hit.node
        doc, span = _doc_key(node), _span(node)
        duplicate = False
        for other in kept:
            other_span = _span(other.node)
            if span is None or other_span is None or doc is None or _doc_key(other.node) != doc:
                continue
            shared = min(span[1], other_span[1]) - max(span[0], other_span[0])
            if shared <= 0:
                continue
            if shared >= overlap * (span[1] - span[0]):
                duplicate = True
                break
            text = node.get_content(metadata_mode=MetadataMode.NONE)
            if not trim or len(text) != span[1] - span[0]:
                continue
            if other_span[0] <= span[0] < other_span[1]:  # starts inside the kept chunk
                node = _with_text(node, text[shared:], (span[0] + shared, span[1]))
            elif other_span[0] < span[1] <= other_span[1]:  # ends inside it
                node = _with_text(node, text[: len(text) - shared], (span[0], span[1] - shared))
            span = _span(node)
            if span is None:
                duplicate = True
                break
        shingles = _shingles(node.get_content(metadata_mode=MetadataMode.NONE))
        if not duplicate and shingles:
            for seen in kept_shingles:
                if len(shingles & seen) / len(shingles | seen) >= similarity:
                    duplicate = True
                    break
        if duplicate:
            dropped.append(hit)
            continue
        kept.append(hit if node is hit.node else NodeWithScore(node=node, score=hit.score))
        kept_shingles.append(shingles)
    return kept, dropped


@dataclass(frozen=True)
class Passage:
    """One passage of a built context."""

    number: int
    """Its citation number: the context shows it as ``[number]``."""
    label: str
    """Where it comes from (:func:`passage_source`)."""
    text: str
    """The passage as rendered, header included."""
    tokens: int
    """Tokens of ``text`` in the builder's tokenizer."""
    node: NodeWithScore
    """The node, holding the (possibly cut or condensed) text that was kept."""
    truncated: bool = False
    summarized: bool = False


@dataclass(frozen=True)
class BuiltContext:
    """What :meth:`ContextBuilder.build` returns."""

    text: str
    """The passages, rendered and joined by blank lines: the prompt's context."""
    passages: list[Passage]
    tokens: int
    """Tokens of ``text``; never more than ``budget``."""
    budget: int
    strategy: str
    """The strategy that produced it (``truncate`` after a summarize fallback)."""
    dropped: list[NodeWithScore] = field(default_factory=list)
    """Nodes left out: duplicates, overlaps, and those that did not fit."""
    fallback_reason: str | None = None
    """Why ``summarize`` fell back to ``truncate``, if it did."""

    @property
    def nodes(self) -> list[NodeWithScore]:
        """The kept nodes, in context order."""
        return [p.node for p in self.passages]


class ContextBuilder(BaseNodePostprocessor):
    """Fit passages into a token budget with citations (a LlamaIndex node postprocessor).

    As a postprocessor it returns the nodes that fit, in context order, their text cut or
    condensed where the strategy did so; :meth:`build` also returns the rendered context.

    Args:
        max_tokens: The budget, in the tokenizer's tokens, for the whole rendered context
            (``contextOptimization.maxTokens``; ``rag.contextWindow`` too: the smaller wins).
        strategy: ``truncate``, ``prioritize`` or ``summarize`` (module docstring).
        include_metadata: Render each node's metadata with its text
            (``MetadataMode.LLM``); when false only the text and the citation header.
        tokenizer_model: tiktoken model or encoding used when ``tokenizer`` is not given.
        tokenizer: A ``str → token count`` function (e.g. from a Hugging Face tokenizer).
        llm: The LLM that condenses passages; required by ``summarize``.
        dedupe: Run :func:`dedupe_nodes` first.
        overlap: :func:`dedupe_nodes`' ``overlap``.
        similarity: :func:`dedupe_nodes`' ``similarity``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    max_tokens: int = Field(description="Token budget of the rendered context.")
    strategy: ContextStrategy = Field(default="truncate")
    include_metadata: bool = Field(default=True)
    tokenizer_model: str = Field(default="gpt-4o")
    tokenizer: Callable[[str], int] | None = Field(default=None, exclude=True)
    llm: LLM | None = Field(default=None, exclude=True)
    dedupe: bool = Field(default=True)
    overlap: float = Field(default=0.5, gt=0.0, le=1.0)
    similarity: float = Field(default=0.9, gt=0.0, le=1.0)

    _count: Callable[[str], int] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> ContextBuilder:
        if self.max_tokens < 1:
            raise field_error(
                "ContextBuilder",
                _MAX_TOKENS_FIELD,
                self.max_tokens,
                "the token budget must be a positive integer (e.g. 4000)",
            )
        if self.strategy == "summarize" and self.llm is None:
            raise field_error(
                "ContextBuilder",
                _STRATEGY_FIELD,
                self.strategy,
                "`summarize` needs an LLM: configure one for the agent (llm=...), or use "
                "`truncate` or `prioritize`",
            )
        return self

    @classmethod
    def class_name(cls) -> str:
        """The LlamaIndex component name."""
        return "ContextBuilder"

    @classmethod
    def from_spec(
        cls,
        rag: AgentRag,
        *,
        llm: LLM | None = None,
        tokenizer: Callable[[str], int] | None = None,
        tokenizer_model: str = "gpt-4o",
    ) -> ContextBuilder | None:
        """The builder an agent's ``memory.rag`` section asks for, or ``None``.

        The budget is ``rag.retrieval.contextOptimization.maxTokens`` (when
        ``contextOptimization.enabled`` is not false) and ``rag.contextWindow``, the smaller
        of those given; the strategy is ``contextOptimization.strategy`` (default
        ``truncate``); ``rag.includeMetadata`` (default true) maps to ``include_metadata``.
        ``None`` when neither budget is set.
        """
        opt = rag.retrieval.context_optimization if rag.retrieval else None
        budgets: list[int] = []
        strategy: ContextStrategy = "truncate"
        if opt is not None and opt.enabled is not False:
            if opt.max_tokens is not None:
                budgets.append(opt.max_tokens)
            strategy = opt.strategy or "truncate"
        if rag.context_window is not None:
            budgets.append(rag.context_window)
        if not budgets:
            return None
        return cls(
            max_tokens=min(budgets),
            strategy=strategy,
            include_metadata=rag.include_metadata is not False,
            tokenizer=tokenizer,
            tokenizer_model=tokenizer_model,
            llm=llm,
        )

    # -- tokens and rendering ------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in this builder's tokenizer."""
        if self._count is None:
            self._count = self.tokenizer or _cached_counter(self.tokenizer_model)
        return self._count(text)

    def _render(self, number: int, node: BaseNode) -> str:
        mode = MetadataMode.LLM if self.include_metadata else MetadataMode.NONE
        body = node.get_content(metadata_mode=mode).strip()
        return f"[{number}] (source: {passage_source(node)})\n{body}"

    def _passage(
        self, number: int, hit: NodeWithScore, *, truncated: bool = False, summarized: bool = False
    ) -> Passage:
        text = self._render(number, hit.node)
        return Passage(
            number=number,
            label=passage_source(hit.node),
            text=text,
            tokens=self.count_tokens(text),
            node=hit,
            truncated=truncated,
            summarized=summarized,
        )

    def _separator_tokens(self) -> int:
        return self.count_tokens("\n\n")

    def _cut(self, number: int, hit: NodeWithScore, budget: int) -> Passage | None:
        """The longest prefix of ``hit`` ending at a sentence end (else a word end) whose
        rendered passage fits ``budget``; ``None`` when not even one word fits."""
        text = hit.node.get_content(metadata_mode=MetadataMode.NONE)
        sentence_ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        word_ends = [m.end() for m in re.finditer(r"\S+", text)]
        for ends, marker in ((sentence_ends, ""), (word_ends, " …")):
            best = self._longest_fit(number, hit, text, ends, marker, budget)
            if best is not None:
                return best
        return None

    def _longest_fit(
        self,
        number: int,
        hit: NodeWithScore,
        text: str,
        ends: list[int],
        marker: str,
        budget: int,
    ) -> Passage | None:
        lo, hi, best = 0, len(ends) - 1, None
        while lo <= hi:  # token counts grow with the prefix: binary search the cut
            mid = (lo + hi) // 2
            prefix = text[: ends[mid]].rstrip() + marker
            if not prefix.strip():
                lo = mid + 1
                continue
            span = _span(hit.node)
            new_span = (span[0], span[0] + ends[mid]) if span else None
            node = NodeWithScore(node=_with_text(hit.node, prefix, new_span), score=hit.score)
            passage = self._passage(number, node, truncated=True)
            if passage.tokens <= budget:
                best, lo = passage, mid + 1
            else:
                hi = mid - 1
        return best

    # -- strategies ----------------------------------------------------------------------

    def _fit_in_order(
        self, hits: Sequence[NodeWithScore], dropped: list[NodeWithScore], *, skip: bool
    ) -> list[Passage]:
        """Add passages while they fit. ``skip``: a passage that does not fit is skipped
        (prioritize); otherwise it is cut to fill the budget and nothing follows (truncate)."""
        passages: list[Passage] = []
        used, sep = 0, self._separator_tokens()
        for i, hit in enumerate(hits):
            number = len(passages) + 1
            cost = sep if passages else 0
            passage = self._passage(number, hit)
            if used + cost + passage.tokens <= self.max_tokens:
                passages.append(passage)
                used += cost + passage.tokens
                continue
            if skip:
                dropped.append(hit)
                continue
            cut = self._cut(number, hit, self.max_tokens - used - cost)
            if cut is not None:
                passages.append(cut)
                used += cost + cut.tokens
            else:
                dropped.append(hit)
            dropped.extend(hits[i + 1 :])
            break
        if skip and not passages and hits:
            # Nothing fits whole: cut the best passage rather than return no context.
            cut = self._cut(1, hits[0], self.max_tokens)
            if cut is not None:
                passages.append(cut)
                dropped.remove(hits[0])
        return passages

    def _summarize(
        self, hits: list[NodeWithScore], question: str
    ) -> tuple[list[NodeWithScore], set[str]]:
        """Condense every passage longer than its share of the budget (raises on LLM error)."""
        assert self.llm is not None  # checked by the validator
        total = sum(self._passage(i, h).tokens for i, h in enumerate(hits, 1)) or 1
        out: list[NodeWithScore] = []
        condensed: set[str] = set()
        for i, hit in enumerate(hits, 1):
            tokens = self._passage(i, hit).tokens
            share = max(16, self.max_tokens * tokens // total - 16)
            if tokens <= share:
                out.append(hit)
                continue
            text = hit.node.get_content(metadata_mode=MetadataMode.NONE)
            prompt = SUMMARY_PROMPT.format(
                words=max(10, share * 3 // 4), question=question, text=text
            )
            summary = self.llm.complete(prompt).text.strip()
            if not summary:
                raise ValueError("the LLM returned an empty summary")
            out.append(NodeWithScore(node=_with_text(hit.node, summary), score=hit.score))
            condensed.add(hit.node.node_id)
        return out, condensed

    def build(
        self, nodes: Sequence[NodeWithScore], query: QueryBundle | str | None = None
    ) -> BuiltContext:
        """Dedupe ``nodes`` (given in rank order) and fit them into the budget."""
        dropped: list[NodeWithScore] = []
        hits = list(nodes)
        if self.dedupe:
            hits, dropped = dedupe_nodes(hits, overlap=self.overlap, similarity=self.similarity)
        strategy: str = self.strategy
        reason: str | None = None
        condensed: set[str] = set()
        if strategy == "prioritize":
            hits = sorted(hits, key=lambda h: -(h.score if h.score is not None else -1e30))
        elif strategy == "summarize":
            sep = self._separator_tokens()
            whole = sum(self._passage(i, h).tokens + sep for i, h in enumerate(hits, 1))
            if whole - sep > self.max_tokens:
                question = query.query_str if isinstance(query, QueryBundle) else (query or "")
                try:
                    hits, condensed = self._summarize(hits, question)
                except Exception as exc:  # any LLM failure: the context must still be built
                    reason = f"summarize failed ({type(exc).__name__}: {exc}); used truncate"
                    logger.warning("ContextBuilder: %s", reason)
                    strategy = "truncate"
        passages = self._fit_in_order(hits, dropped, skip=self.strategy == "prioritize")
        if condensed:
            passages = [
                Passage(
                    number=p.number,
                    label=p.label,
                    text=p.text,
                    tokens=p.tokens,
                    node=p.node,
                    truncated=p.truncated,
                    summarized=p.node.node.node_id in condensed,
                )
                for p in passages
            ]
        text = "\n\n".join(p.text for p in passages)
        tokens = self.count_tokens(text)
        while passages and tokens > self.max_tokens:  # tokenizers are not quite additive
            dropped.append(passages.pop().node)
            text = "\n\n".join(p.text for p in passages)
            tokens = self.count_tokens(text)
        return BuiltContext(
            text=text,
            passages=passages,
            tokens=tokens,
            budget=self.max_tokens,
            strategy=strategy,
            dropped=dropped,
            fallback_reason=reason,
        )

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        return self.build(nodes, query_bundle).nodes
