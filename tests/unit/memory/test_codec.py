"""Message codec: compression and encryption at rest, readable whatever wrote the row."""

from __future__ import annotations

import pickle

import pytest
from llama_index.core.llms import ChatMessage, MessageRole

from aof_index.memory.codec import (
    PLAIN,
    DecodeError,
    MessageCodec,
    MessageTooLargeError,
    generate_key,
    parse_keys,
)

LOG = "kubectl describe pod api-7f9c: OOMKilled, restarting. " * 100
MESSAGE = ChatMessage(
    role=MessageRole.ASSISTANT,
    content=LOG + "ünïcode 💬",
    additional_kwargs={"tool_calls": [{"id": "t1", "function": {"name": "kubectl"}}]},
)


@pytest.mark.parametrize("algorithm", ["zstd", "gzip", "lz4"])
def test_each_algorithm_compresses_and_round_trips(algorithm: str) -> None:
    codec = MessageCodec(algorithm)  # type: ignore[arg-type]
    stored = codec.encode(MESSAGE)
    assert stored.startswith("aof:")
    assert len(stored) < len(MESSAGE.model_dump_json()) / 5
    assert codec.decode(stored) == MESSAGE
    assert codec.decode(stored.encode()) == MESSAGE


def test_small_messages_stay_plain_json() -> None:
    small = ChatMessage(role=MessageRole.USER, content="hi")
    assert MessageCodec("zstd").encode(small) == small.model_dump_json()


def test_any_codec_reads_rows_written_with_other_settings() -> None:
    rows = [MessageCodec(a).encode(MESSAGE) for a in ("zstd", "gzip", "lz4")]  # type: ignore[arg-type]
    rows.append(PLAIN.encode(MESSAGE))
    for reader in (PLAIN, MessageCodec("lz4")):
        assert all(reader.decode(row) == MESSAGE for row in rows)


def test_encryption_hides_the_text_and_needs_a_key() -> None:
    key = generate_key().encode()
    codec = MessageCodec("zstd", keys=[key])
    stored = codec.encode(MESSAGE)
    assert stored.startswith("aof:fe:") and "OOMKilled" not in stored
    assert codec.decode(stored) == MESSAGE
    with pytest.raises(DecodeError, match="keySecretRef"):
        PLAIN.decode(stored)
    with pytest.raises(DecodeError, match="add the old key"):
        MessageCodec(keys=[generate_key().encode()]).decode(stored)


def test_rotation_reads_with_old_keys_and_writes_with_the_newest() -> None:
    old, new = generate_key().encode(), generate_key().encode()
    written_before = MessageCodec(keys=[old]).encode(MESSAGE)
    rotated = MessageCodec(keys=[new, old])
    assert rotated.decode(written_before) == MESSAGE
    assert MessageCodec(keys=[new]).decode(rotated.encode(MESSAGE)) == MESSAGE


def test_parse_keys_accepts_several_and_names_the_field_on_garbage() -> None:
    a, b = generate_key(), generate_key()
    assert parse_keys(f"{a},\n{b}\n") == [a.encode(), b.encode()]
    with pytest.raises(ValueError, match=r"spec\.x: key 2 of 2") as info:
        parse_keys(f"{a} hunter2", field="spec.x")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValueError, match="empty"):
        parse_keys("  ")


def test_oversized_messages_are_refused_not_truncated() -> None:
    codec = MessageCodec(max_bytes=1000)
    with pytest.raises(MessageTooLargeError, match="compression"):
        codec.encode(MESSAGE)
    assert len(MessageCodec("zstd", max_bytes=1000).encode(MESSAGE)) < 1000


def test_corrupt_or_unknown_rows_raise_decode_errors() -> None:
    with pytest.raises(DecodeError, match="unknown format"):
        PLAIN.decode("aof:xx:abc")
    with pytest.raises(DecodeError, match="corrupt"):
        PLAIN.decode("aof:zs:bm90IHpzdGQ=")


def test_codecs_pickle_compare_and_hide_keys() -> None:
    codec = MessageCodec("gzip", keys=[generate_key().encode()])
    assert pickle.loads(pickle.dumps(codec)) == codec
    assert "keys" not in repr(codec) and "encrypted=True" in repr(codec)
    with pytest.raises(ValueError, match="compression must be"):
        MessageCodec("brotli")  # type: ignore[arg-type]


def test_a_corrupt_plain_row_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not a valid chat message"):
        PLAIN.decode('{"role": "robot"')
