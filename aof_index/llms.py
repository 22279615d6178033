"""The LLM used for answers, chat and query enhancement: from explicit settings or the
environment.

:func:`llm_from_settings` builds one from explicit settings, for three providers:

* ``"openai"``: OpenAI itself (``api_key``, or ``OPENAI_API_KEY``; model ``gpt-4o-mini``
  unless set). Extra: ``aof-index[openai]``.
* ``"openai-compatible"``: any server speaking OpenAI's chat API, by ``base_url`` (Ollama
  ``http://127.0.0.1:11434/v1``, vLLM, llama.cpp's ``llama-server``, LiteLLM); ``model``
  is required, ``api_key`` optional. Extra: ``aof-index[openai]``.
* ``"llama-cpp"``: a local GGUF file run in-process by llama-cpp-python, for offline use
  (``model_path``). Nothing is downloaded: the file must already be on disk. The model is
  loaded on the first call, not at construction. Extra: ``aof-index[llama-cpp]``
  (llama-cpp-python, built from source with cmake and a C/C++ compiler unless a wheel
  matches the platform; not part of ``all``).

:func:`llm_from_env` reads the same settings from the environment:

* ``AOF_INDEX_LLM_BASE_URL`` (or ``OPENAI_BASE_URL``): an OpenAI-compatible server;
  ``AOF_INDEX_LLM_MODEL`` names the model.
* ``AOF_INDEX_LLM_MODEL_PATH``: a local GGUF file (llama-cpp), when no base URL is set.
* ``OPENAI_API_KEY`` alone: OpenAI itself (model ``gpt-4o-mini`` unless set).
* ``AOF_INDEX_LLM_TIMEOUT``: seconds before a call is abandoned (default 60);
  ``AOF_INDEX_LLM_CONTEXT_WINDOW`` the context size (default 16384).

With none of them set there is no LLM, and callers show retrieved passages instead.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms import LLM, CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

from aof_index.errors import BackendUnavailableError, LLMError

__all__ = ["NO_LLM_HINT", "LLMProvider", "LlamaCppLLM", "llm_from_env", "llm_from_settings"]

NO_LLM_HINT = (
    "No LLM is configured, so only the retrieved passages are shown. To get answers, set "
    "OPENAI_API_KEY (OpenAI) or AOF_INDEX_LLM_BASE_URL and AOF_INDEX_LLM_MODEL (any "
    "OpenAI-compatible server such as Ollama at http://127.0.0.1:11434/v1)."
)

LLMProvider = Literal["openai", "openai-compatible", "llama-cpp"]
"""The LLM providers :func:`llm_from_settings` builds."""

_PROVIDERS: tuple[str, ...] = get_args(LLMProvider)
_OPENAI_URL = "https://api.openai.com/v1"
_DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
_DEFAULT_CONTEXT_WINDOW = 16384
_OPENAI_EXTRA = "pip install 'aof-index[openai]'"
_LLAMA_CPP_EXTRA = (
    "pip install 'aof-index[llama-cpp]' (it compiles llama.cpp: needs cmake and a C/C++ "
    "compiler unless a prebuilt wheel matches this platform)"
)


def llm_from_settings(
    provider: str,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    model_path: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
    context_window: int | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    max_retries: int = 1,
    n_gpu_layers: int = 0,
    n_threads: int | None = None,
) -> LLM:
    """Build an LLM from explicit settings. Does no I/O: clients connect, and a local model
    loads, on the first call.

    Args:
        provider: ``"openai"``, ``"openai-compatible"`` or ``"llama-cpp"``.
        model: The model name. Required for ``openai-compatible`` (the name the server
            serves, e.g. ``llama3.1:8b`` on Ollama); ``gpt-4o-mini`` for ``openai`` unless
            set; ignored for ``llama-cpp``.
        base_url: The server's OpenAI-compatible base URL, usually ending in ``/v1``.
            Required for ``openai-compatible``; for ``openai`` it overrides the endpoint.
        api_key: The API key (a resolved secret, never logged). ``openai`` falls back to
            ``OPENAI_API_KEY``; ``openai-compatible`` sends ``"unused"`` when none is given.
        model_path: The local GGUF file, for ``llama-cpp`` (required).
        timeout: Seconds before an HTTP call is abandoned (OpenAI providers). A local
            model's generation cannot be interrupted; callers bound it from outside (as
            ``QueryEnhancingRetriever`` does).
        context_window: The model's context size in tokens (default 16384); for
            ``llama-cpp`` it is the ``n_ctx`` the model is loaded with.
        max_tokens: Most tokens to generate per call (default: the server's / 512 local).
        temperature: Sampling temperature (default: the server's / 0.1 local).
        max_retries: Retries of a failed HTTP call (OpenAI providers).
        n_gpu_layers: Layers offloaded to a GPU (``llama-cpp``; 0: CPU only, -1: all).
        n_threads: CPU threads (``llama-cpp``; default: llama.cpp's choice).

    Raises:
        LLMError: an unknown provider, or a required setting missing or invalid (the
            message names the setting).
        BackendUnavailableError: the provider's client package is not installed (the
            message names what to install).
    """
    if provider not in _PROVIDERS:
        raise LLMError(
            f"unknown LLM provider {provider!r}: choose 'openai', 'openai-compatible' "
            "(Ollama, vLLM, llama.cpp server... by base_url) or 'llama-cpp' (a local GGUF "
            "file by model_path)"
        )
    if not (math.isfinite(timeout) and timeout > 0):
        raise LLMError(f"LLM setting `timeout` must be a number of seconds > 0, got {timeout!r}")
    if context_window is not None and context_window < 1:
        raise LLMError(f"LLM setting `context_window` must be >= 1, got {context_window!r}")
    if provider == "llama-cpp":
        return _llama_cpp(
            model_path,
            context_window=context_window,
            max_tokens=max_tokens,
            temperature=temperature,
            n_gpu_layers=n_gpu_layers,
            n_threads=n_threads,
        )
    if provider == "openai":
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise LLMError(
                "LLM provider 'openai' needs an API key: set `api_key` (or OPENAI_API_KEY); "
                "for a local server use provider 'openai-compatible' with `base_url`"
            )
        base_url = base_url or _OPENAI_URL
        model = model or _DEFAULT_OPENAI_MODEL
    else:
        if not base_url:
            raise LLMError(
                "LLM provider 'openai-compatible' needs `base_url`, the server's OpenAI-"
                "compatible endpoint (e.g. http://127.0.0.1:11434/v1 for Ollama, "
                "http://127.0.0.1:8000/v1 for vLLM, http://127.0.0.1:8080/v1 for llama-server)"
            )
        if not model:
            raise LLMError(
                "LLM provider 'openai-compatible' needs `model`, the model name the server "
                f"at {base_url} serves (e.g. llama3.1:8b on Ollama)"
            )
    if not base_url.startswith(("http://", "https://")):
        raise LLMError(f"LLM setting `base_url` must be an http(s) URL, got {base_url!r}")
    try:
        from llama_index.llms.openai_like import OpenAILike
    except ImportError as exc:
        raise BackendUnavailableError(
            f"LLM provider {provider!r} needs its client, which is missing: {_OPENAI_EXTRA}"
        ) from exc
    extra: dict[str, Any] = {}
    if max_tokens is not None:
        extra["max_tokens"] = max_tokens
    if temperature is not None:
        extra["temperature"] = temperature
    return OpenAILike(
        model=model,
        api_base=base_url,
        api_key=api_key or "unused",
        timeout=timeout,
        max_retries=max_retries,
        is_chat_model=True,
        context_window=context_window or _DEFAULT_CONTEXT_WINDOW,
        **extra,
    )


def llm_from_env(model: str | None = None) -> LLM | None:
    """Build the configured LLM, or return ``None`` when none is configured.

    Args:
        model: the model to ask for on the configured server, instead of
            ``AOF_INDEX_LLM_MODEL`` (e.g. ``conversational.summarization.model``).
    """
    base_url = os.environ.get("AOF_INDEX_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    api_key = os.environ.get("OPENAI_API_KEY")
    model_path = os.environ.get("AOF_INDEX_LLM_MODEL_PATH")
    if not base_url and not api_key and not model_path:
        return None
    timeout = float(os.environ.get("AOF_INDEX_LLM_TIMEOUT", "60"))
    context_window = int(
        os.environ.get("AOF_INDEX_LLM_CONTEXT_WINDOW", str(_DEFAULT_CONTEXT_WINDOW))
    )
    if not base_url and model_path:
        return llm_from_settings(
            "llama-cpp", model_path=model_path, context_window=context_window, timeout=timeout
        )
    return llm_from_settings(
        "openai-compatible" if base_url else "openai",
        model=model or os.environ.get("AOF_INDEX_LLM_MODEL", _DEFAULT_OPENAI_MODEL),
        base_url=base_url or _OPENAI_URL,
        api_key=api_key,
        timeout=timeout,
        context_window=context_window,
    )


# --- llama.cpp ------------------------------------------------------------------------------


def _llama_cpp(
    model_path: str | os.PathLike[str] | None,
    *,
    context_window: int | None,
    max_tokens: int | None,
    temperature: float | None,
    n_gpu_layers: int,
    n_threads: int | None,
) -> LLM:
    if not model_path:
        raise LLMError(
            "LLM provider 'llama-cpp' needs `model_path`, a local GGUF file (nothing is "
            "downloaded at run time: fetch the file ahead of time)"
        )
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise LLMError(
            f"LLM setting `model_path`: no file at {str(path)!r}; give the path of a GGUF "
            "model already on disk (nothing is downloaded at run time)"
        )
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            f"LLM provider 'llama-cpp' needs llama-cpp-python, which is missing: {_LLAMA_CPP_EXTRA}"
        ) from exc
    return LlamaCppLLM(
        model_path=str(path),
        context_window=context_window or 4096,
        max_tokens=max_tokens if max_tokens is not None else 512,
        temperature=temperature if temperature is not None else 0.1,
        n_gpu_layers=n_gpu_layers,
        n_threads=n_threads,
    )


class LlamaCppLLM(CustomLLM):
    """A local GGUF model run in-process by llama-cpp-python.

    Written here rather than using ``llama-index-llms-llama-cpp`` because that class loads
    the model in its constructor (and downloads a default model when no path is given),
    and formats prompts with generic templates; this one loads lazily on the first call,
    never downloads, and applies the chat template stored in the GGUF file
    (``Llama.create_chat_completion``). Calls are serialised by a lock (a llama.cpp
    context is not thread-safe) and synchronous: LlamaIndex's async methods run them on
    the calling thread, so async callers should use a worker thread (as
    ``QueryEnhancingRetriever`` does for every sync-only LLM).
    """

    model_path: str = Field(description="The local GGUF file.")
    context_window: int = Field(default=4096, description="n_ctx the model is loaded with.")
    max_tokens: int = Field(default=512, description="Most tokens generated per call.")
    temperature: float = Field(default=0.1)
    n_gpu_layers: int = Field(default=0, description="Layers offloaded to a GPU (-1: all).")
    n_threads: int | None = Field(default=None)
    _model: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "LlamaCppLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """Context window, output budget and model name (the file's stem)."""
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_tokens,
            is_chat_model=True,
            model_name=Path(self.model_path).stem,
        )

    def _load(self) -> Any:
        if self._model is None:
            from llama_cpp import Llama

            self._model = Llama(
                model_path=self.model_path,
                n_ctx=self.context_window,
                n_gpu_layers=self.n_gpu_layers,
                n_threads=self.n_threads,
                verbose=False,
            )
        return self._model

    def _generate(self, messages: Sequence[ChatMessage]) -> str:
        payload = [
            {"role": message.role.value, "content": message.content or ""} for message in messages
        ]
        with self._lock:
            result = self._load().create_chat_completion(
                messages=payload, max_tokens=self.max_tokens, temperature=self.temperature
            )
        return str(result["choices"][0]["message"].get("content") or "")

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer the conversation, formatted with the model's own chat template."""
        text = self._generate(messages)
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Answer ``prompt``, sent as one user message."""
        return CompletionResponse(text=self._generate([ChatMessage(role="user", content=prompt)]))

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """The whole answer as one chunk (generation is not streamed token by token)."""
        response = self.chat(messages, **kwargs)

        def gen() -> ChatResponseGen:
            yield ChatResponse(message=response.message, delta=response.message.content)

        return gen()

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """The whole answer as one chunk (generation is not streamed token by token)."""
        response = self.complete(prompt, formatted, **kwargs)

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=response.text, delta=response.text)

        return gen()
