"""The LLM used for answers and chat, configured from the environment.

* ``AOF_INDEX_LLM_BASE_URL`` (or ``OPENAI_BASE_URL``): any OpenAI-compatible server
  (Ollama, vLLM, llama.cpp server, LiteLLM); ``AOF_INDEX_LLM_MODEL`` names the model.
* ``OPENAI_API_KEY`` alone: OpenAI itself (model ``gpt-4o-mini`` unless set).
* ``AOF_INDEX_LLM_TIMEOUT``: seconds before a call is abandoned (default 60).

With none of them set there is no LLM, and callers show retrieved passages instead.
"""

from __future__ import annotations

import os

from llama_index.core.llms import LLM

from aof_index.errors import BackendUnavailableError

__all__ = ["NO_LLM_HINT", "llm_from_env"]

NO_LLM_HINT = (
    "No LLM is configured, so only the retrieved passages are shown. To get answers, set "
    "OPENAI_API_KEY (OpenAI) or AOF_INDEX_LLM_BASE_URL and AOF_INDEX_LLM_MODEL (any "
    "OpenAI-compatible server such as Ollama at http://127.0.0.1:11434/v1)."
)


def llm_from_env(model: str | None = None) -> LLM | None:
    """Build the configured LLM, or return ``None`` when none is configured.

    Args:
        model: the model to ask for on the configured server, instead of
            ``AOF_INDEX_LLM_MODEL`` (e.g. ``conversational.summarization.model``).
    """
    base_url = os.environ.get("AOF_INDEX_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    api_key = os.environ.get("OPENAI_API_KEY")
    if not base_url and not api_key:
        return None
    model = model or os.environ.get("AOF_INDEX_LLM_MODEL", "gpt-4o-mini")
    timeout = float(os.environ.get("AOF_INDEX_LLM_TIMEOUT", "60"))
    try:
        from llama_index.llms.openai_like import OpenAILike
    except ImportError as exc:
        raise BackendUnavailableError(
            "An LLM is configured but its client is missing: pip install 'aof-index[openai]'"
        ) from exc
    return OpenAILike(
        model=model,
        api_base=base_url or "https://api.openai.com/v1",
        api_key=api_key or "unused",
        timeout=timeout,
        max_retries=1,
        is_chat_model=True,
        context_window=int(os.environ.get("AOF_INDEX_LLM_CONTEXT_WINDOW", "16384")),
    )
