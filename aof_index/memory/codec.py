"""How a chat message is written to a store: JSON, optionally compressed and encrypted.

Every chat store keeps a message as one text value.  :class:`MessageCodec` turns a
``ChatMessage`` into that text and back, the same way on every backend:

- **plain**: ``ChatMessage.model_dump_json()``, a JSON object (it starts with ``{``);
- **compressed** (``spec.conversational.compression``): ``aof:zs:``, ``aof:gz:`` or ``aof:lz:``
  followed by the base64 of the zstd, gzip or lz4 frame of that JSON.  Only messages of at
  least ``threshold`` bytes are compressed, and only when that makes them smaller;
- **encrypted** (``spec.access.encryption.keySecretRef``): ``aof:fe:`` followed by a Fernet
  token (AES-128-CBC with an HMAC-SHA256, from :mod:`cryptography`) of the plain or
  compressed text.  Compression happens before encryption, since ciphertext does not
  compress.

Reading looks at the prefix, never at the settings: rows written before compression or
encryption was turned on stay readable, and so do rows written with another algorithm.  An
encrypted row needs one of the configured keys; :func:`parse_keys` reads several keys from
one secret (newest first), which is how keys are rotated: the newest encrypts, every one
decrypts, and :meth:`~aof_index.memory.history.ConversationHistory.reencode` rewrites old
rows with the newest key (``docs/memory.md``, "Key rotation").

A message whose stored text would exceed ``max_bytes`` raises :class:`MessageTooLargeError`
before anything is written: nothing is ever truncated.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_THRESHOLD",
    "PLAIN",
    "Algorithm",
    "DecodeError",
    "MessageCodec",
    "MessageTooLargeError",
    "generate_key",
    "parse_keys",
]

import base64
import binascii
import gzip
import re
import threading
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from llama_index.core.llms import ChatMessage
from pydantic import ValidationError

from aof_index.errors import AofIndexError

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

Algorithm = Literal["gzip", "zstd", "lz4"]
"""Compression algorithms of ``spec.conversational.compression.algorithm``."""

DEFAULT_THRESHOLD = 512
"""Messages shorter than this many bytes of JSON are stored uncompressed."""

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Largest stored message, in bytes after encoding (Redis strings stop at 512 MB)."""

_TAG_OF: dict[str, str] = {"zstd": "zs", "gzip": "gz", "lz4": "lz"}
_ENCRYPTED = "aof:fe:"
_PREFIX = "aof:"
_PREFIX_BYTES = _PREFIX.encode("ascii")


class MessageTooLargeError(AofIndexError, ValueError):
    """A message is larger than the store accepts; nothing was written."""


class DecodeError(AofIndexError):
    """A stored message cannot be read back (unknown format, or no key decrypts it)."""


def _zstd() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    import zstandard

    compressor, decompressor = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    return compressor.compress, decompressor.decompress


def _gzip() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    # mtime=0: the same message always compresses to the same bytes.
    return (lambda data: gzip.compress(data, compresslevel=6, mtime=0)), gzip.decompress


def _lz4() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    import lz4.frame

    return lz4.frame.compress, lz4.frame.decompress


_CODECS: dict[str, Callable[[], tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]] = {
    "zs": _zstd,
    "gz": _gzip,
    "lz": _lz4,
}
_per_thread = threading.local()  # compressor objects are not safe to share between threads


def _codec(tag: str) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    """The (compress, decompress) pair of ``tag``, made once per thread."""
    cache: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]
    cache = _per_thread.__dict__.setdefault("codecs", {})
    if tag not in cache:
        cache[tag] = _CODECS[tag]()
    return cache[tag]


def generate_key() -> str:
    """A new random encryption key, as text to put in the secret."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode("ascii")


def parse_keys(value: str, *, field: str = "keySecretRef") -> list[bytes]:
    """Read one or more keys (newest first, separated by commas or whitespace) from a secret.

    Raises:
        ValueError: a key is not 32 url-safe base64-encoded bytes; the message names ``field``
            and how to make a key, never the value.
    """
    keys = [part.encode("ascii", "replace") for part in re.split(r"[\s,]+", value) if part]
    if not keys:
        raise ValueError(
            f"{field}: the secret is empty; put a key made by `aof-index memory keygen`"
        )
    for position, key in enumerate(keys, 1):
        try:
            raw = base64.urlsafe_b64decode(key)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError(
                f"{field}: key {position} of {len(keys)} in the secret is not an encryption key "
                "(32 bytes, url-safe base64); make one with `aof-index memory keygen`"
            )
    return keys


class MessageCodec:
    """Encodes messages for storage and decodes what a store holds.

    Args:
        compression: ``zstd``, ``gzip``, ``lz4``, or ``None`` to store JSON as is.
        threshold: smallest JSON size, in bytes, that is compressed.
        keys: encryption keys (see :func:`parse_keys`), newest first; the first encrypts,
            any decrypts.  Empty: messages are not encrypted (encrypted rows stay unreadable).
        max_bytes: largest encoded message; larger ones raise :class:`MessageTooLargeError`.

    A codec is immutable, cheap to share between threads, and picklable; ``repr`` never
    shows the keys.
    """

    def __init__(
        self,
        compression: Algorithm | None = None,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        keys: Sequence[bytes] = (),
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if compression is not None and compression not in _TAG_OF:
            raise ValueError(
                f"compression must be one of {', '.join(_TAG_OF)} or None, got {compression!r}"
            )
        self.compression = compression
        self.threshold = threshold
        self.max_bytes = max_bytes
        self._keys = tuple(keys)

    @property
    def encrypts(self) -> bool:
        """Whether new messages are encrypted."""
        return bool(self._keys)

    def __repr__(self) -> str:
        return (
            f"MessageCodec(compression={self.compression!r}, threshold={self.threshold}, "
            f"encrypted={self.encrypts}, max_bytes={self.max_bytes})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MessageCodec):
            return NotImplemented
        return self.__getstate__() == other.__getstate__()

    def __hash__(self) -> int:
        return hash((self.compression, self.threshold, self.max_bytes, self._keys))

    def __getstate__(self) -> dict[str, Any]:
        return {
            "compression": self.compression,
            "threshold": self.threshold,
            "max_bytes": self.max_bytes,
            "_keys": self._keys,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @cached_property
    def _fernet(self) -> MultiFernet:
        from cryptography.fernet import Fernet, MultiFernet

        return MultiFernet([Fernet(key) for key in self._keys])

    # -- encode -------------------------------------------------------------------------
    def encode(self, message: ChatMessage) -> str:
        """The text a store keeps for ``message``."""
        text = message.model_dump_json()
        data = text.encode("utf-8")
        if self.compression is not None and len(data) >= self.threshold:
            tag = _TAG_OF[self.compression]
            packed = _codec(tag)[0](data)
            encoded = base64.b64encode(packed).decode("ascii")
            if len(encoded) + 7 < len(data):
                text = f"{_PREFIX}{tag}:{encoded}"
        if self._keys:
            token = self._fernet.encrypt(text.encode("utf-8")).decode("ascii")
            text = _ENCRYPTED + token
        if len(text) > self.max_bytes:  # the encoded text is ASCII unless it is plain JSON
            size = len(text.encode("utf-8"))
            if size > self.max_bytes:
                raise MessageTooLargeError(
                    f"message of {size:,} bytes (as stored) is larger than the limit of "
                    f"{self.max_bytes:,} bytes; split it, turn on "
                    "spec.conversational.compression, or raise the store's max_bytes"
                )
        return text

    # -- decode -------------------------------------------------------------------------
    def decode(self, stored: str | bytes) -> ChatMessage:
        """The message a store's text (or bytes) holds, whatever settings wrote it."""
        try:
            if isinstance(stored, bytes):
                if not stored.startswith(_PREFIX_BYTES):  # plain JSON: no copy to str
                    return ChatMessage.model_validate_json(stored)
                stored = stored.decode("utf-8")
            return ChatMessage.model_validate_json(self.unwrap(stored))
        except ValidationError as exc:
            raise DecodeError(f"stored message is not a valid chat message: {exc}") from exc

    def unwrap(self, text: str) -> str:
        """The JSON inside a stored text: decrypted and decompressed as its prefix says."""
        if text.startswith(_ENCRYPTED):
            text = self._decrypt(text[len(_ENCRYPTED) :])
        if not text.startswith(_PREFIX):
            return text
        tag, _, payload = text[len(_PREFIX) :].partition(":")
        if tag not in _CODECS:
            raise DecodeError(f"stored message has an unknown format tag {tag!r}")
        try:
            return _codec(tag)[1](base64.b64decode(payload)).decode("utf-8")
        except ImportError:
            raise
        except Exception as exc:
            raise DecodeError(f"stored message ({tag}) is corrupt: {exc}") from exc

    def _decrypt(self, token: str) -> str:
        if not self._keys:
            raise DecodeError(
                "stored message is encrypted but no key is configured; set "
                "spec.access.encryption.keySecretRef to the secret holding its key"
            )
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise DecodeError(
                "stored message is encrypted with a key that is not in "
                "spec.access.encryption.keySecretRef; add the old key after the new one "
                "(newest first) until every row is re-encrypted"
            ) from exc


PLAIN = MessageCodec()
"""The default codec: plain JSON, no compression, no encryption."""
