"""``AOFQueryEngine``: a LlamaIndex query engine over a Memory, with or without an LLM.

With an LLM it answers from the retrieved passages and cites them as ``[1]``, ``[2]``...;
without one it returns the passages themselves with a note on how to configure an LLM, so
it is useful offline and in notebooks from the first minute.

Example:
    >>> engine = AOFQueryEngine.from_manifest("memory.yaml")     # doctest: +SKIP
    >>> response = engine.query("Why is my pod in CrashLoopBackOff?")  # doctest: +SKIP
    >>> [n.node.metadata["source"] for n in response.source_nodes]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import Response
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import LLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.prompts.mixin import PromptDictType, PromptMixinType
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from aof_index.build.memory import MemoryComponents, build_memory
from aof_index.errors import LLMError
from aof_index.llms import NO_LLM_HINT, llm_from_env

__all__ = ["ANSWER_PROMPT", "AOFQueryEngine", "format_passages", "llm_error", "passage_label"]

ANSWER_PROMPT = PromptTemplate(
    "You are assisting an SRE. Answer the question using only the numbered passages below.\n"
    "Cite every claim with the passage number in brackets, like [1] or [2][3]. If the\n"
    "passages do not contain the answer, say so.\n\n"
    "{passages}\n\nQuestion: {question}\nAnswer:"
)


def passage_label(hit: NodeWithScore, *, short: bool = False) -> str:
    """``source — heading`` of a retrieved passage (``short``: file name, not full path)."""
    meta = hit.node.metadata
    source = str(meta.get("source") or hit.node.ref_doc_id or hit.node.node_id)
    where = str(meta.get("file_name") or source) if short else source
    heading = meta.get("heading") or meta.get("title") or ""
    return f"{where} — {heading}" if heading else where


def format_passages(nodes: list[NodeWithScore]) -> str:
    """Number passages as ``[n] (source) text`` for the answer prompt."""
    blocks = []
    for i, hit in enumerate(nodes, 1):
        source = hit.node.metadata.get("source") or hit.node.ref_doc_id or hit.node.node_id
        text = hit.node.get_content(metadata_mode=MetadataMode.LLM)
        blocks.append(f"[{i}] (source: {source})\n{text}")
    return "\n\n".join(blocks)


class AOFQueryEngine(BaseQueryEngine):
    """Retrieve from a Memory and answer with citations (or return passages, with no LLM).

    Args:
        retriever: any LlamaIndex retriever (e.g. ``MemoryComponents.retriever()``).
        llm: the LLM to answer with; ``None`` returns passages only.
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        llm: LLM | None = None,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        self.retriever = retriever
        self.llm = llm
        super().__init__(callback_manager=callback_manager)

    @classmethod
    def from_memory(
        cls, memory: MemoryComponents, *, llm: LLM | None = None, **retriever_kwargs: Any
    ) -> AOFQueryEngine:
        """A query engine over built Memory components; ``llm`` defaults to the environment's."""
        return cls(memory.retriever(**retriever_kwargs), llm=llm or llm_from_env())

    @classmethod
    def from_manifest(
        cls,
        path: str | Path | None = None,
        *,
        name: str | None = None,
        llm: LLM | None = None,
        **retriever_kwargs: Any,
    ) -> AOFQueryEngine:
        """A query engine for the Memory in ``path`` (``None``: the embedded default)."""
        return cls.from_memory(build_memory(path, name=name), llm=llm, **retriever_kwargs)

    def _get_prompts(self) -> PromptDictType:
        return {"answer": ANSWER_PROMPT}

    def _get_prompt_modules(self) -> PromptMixinType:
        return {}

    def _update_prompts(self, prompts_dict: PromptDictType) -> None:
        pass

    def retrieve(self, query_bundle: QueryBundle | str) -> list[NodeWithScore]:
        """Retrieve passages for a query."""
        return self.retriever.retrieve(query_bundle)

    def answer(self, question: str, nodes: list[NodeWithScore]) -> str:
        """Ask the LLM to answer ``question`` from ``nodes``.

        Raises:
            LLMError: no LLM is configured, or it failed or timed out.
        """
        if self.llm is None:
            raise LLMError(NO_LLM_HINT)
        prompt = ANSWER_PROMPT.format(passages=format_passages(nodes), question=question)
        try:
            return self.llm.complete(prompt).text.strip()
        except Exception as exc:
            raise llm_error(self.llm, exc) from exc

    async def aanswer(self, question: str, nodes: list[NodeWithScore]) -> str:
        """Async :meth:`answer`."""
        if self.llm is None:
            raise LLMError(NO_LLM_HINT)
        prompt = ANSWER_PROMPT.format(passages=format_passages(nodes), question=question)
        try:
            return (await self.llm.acomplete(prompt)).text.strip()
        except Exception as exc:
            raise llm_error(self.llm, exc) from exc

    def _response(self, question: str, nodes: list[NodeWithScore], text: str | None) -> Response:
        return Response(
            response=text if text is not None else NO_LLM_HINT,
            source_nodes=nodes,
            metadata={"answered": text is not None, "question": question},
        )

    def _query(self, query_bundle: QueryBundle) -> Response:
        nodes = self.retriever.retrieve(query_bundle)
        text = self.answer(query_bundle.query_str, nodes) if self.llm else None
        return self._response(query_bundle.query_str, nodes, text)

    async def _aquery(self, query_bundle: QueryBundle) -> Response:
        nodes = await self.retriever.aretrieve(query_bundle)
        text = await self.aanswer(query_bundle.query_str, nodes) if self.llm else None
        return self._response(query_bundle.query_str, nodes, text)


def llm_error(llm: LLM, exc: Exception) -> LLMError:
    """The one-paragraph error for an LLM call that failed or timed out."""
    meta = getattr(llm, "api_base", None) or type(llm).__name__
    return LLMError(
        f"The LLM at {meta} failed ({type(exc).__name__}: {exc}). The passages were retrieved; "
        "check the server address, model name and AOF_INDEX_LLM_TIMEOUT, or unset the LLM "
        "variables to work with passages only."
    )
