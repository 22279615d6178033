"""Duration, Size and CronSchedule: parsing, accessors, serialisation, error messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from aof_index.spec import CronSchedule, Duration, Size


class Holder(BaseModel):
    duration: Duration | None = None
    size: Size | None = None
    cron: CronSchedule | None = None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("30m", 1800),
        ("24h", 86400),
        ("7d", 604800),
        ("2w", 1209600),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("1.5h", 5400),
        ("0s", 0),
    ],
)
def test_duration_parses(text: str, seconds: float) -> None:
    duration = Duration(text)
    assert duration.seconds == seconds
    assert duration.timedelta == timedelta(seconds=seconds)
    assert str(duration) == text


@pytest.mark.parametrize("text", ["", "7", "7 days", "1y", "-5m", "h", "5M", "1h 30m", "m30"])
def test_duration_rejects(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        Holder(duration=text)  # type: ignore[arg-type]
    assert "expected a duration like 30s, 15m, 24h or 7d" in str(info.value)


def test_duration_rejects_bare_number_with_reason() -> None:
    with pytest.raises(ValidationError, match="a bare number has no unit"):
        Holder.model_validate({"duration": 30})


def test_duration_serialises_to_original_text() -> None:
    holder = Holder.model_validate({"duration": "1h30m"})
    assert holder.model_dump() == {"duration": "1h30m", "size": None, "cron": None}
    assert holder.model_dump_json(exclude_none=True) == '{"duration":"1h30m"}'


def test_duration_compares_by_meaning() -> None:
    assert Duration("1h") == Duration("60m")
    assert Duration("90m") == timedelta(hours=1, minutes=30)
    assert Duration("30s") < Duration("1m")
    assert len({Duration("1d"), Duration("24h")}) == 1


def test_duration_from_timedelta_formats_text() -> None:
    holder = Holder(duration=timedelta(days=1, hours=2, milliseconds=5))  # type: ignore[arg-type]
    assert str(holder.duration) == "1d2h5ms"


@given(st.integers(min_value=0, max_value=10**9))
def test_duration_text_round_trip(millis: int) -> None:
    delta = timedelta(milliseconds=millis)
    assert Duration(str(Duration(delta))).timedelta == delta


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10GB", 10 * 1000**3),
        ("512Mi", 512 * 1024**2),
        ("1.5TB", 1_500_000_000_000),
        ("1KiB", 1024),
        ("100", 100),
        ("64k", 64_000),
        ("2gb", 2 * 1000**3),
    ],
)
def test_size_parses(text: str, size: int) -> None:
    assert Size(text).bytes == size
    assert Holder.model_validate({"size": text}).model_dump()["size"] == text


def test_size_accepts_bytes_int() -> None:
    assert Holder.model_validate({"size": 2048}).size == Size("2Ki")


@pytest.mark.parametrize("value", ["10XB", "GB", "ten GB", "-1GB", -5, 1.5])
def test_size_rejects(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        Holder.model_validate({"size": value})
    assert "size" in str(info.value)


@pytest.mark.parametrize("text", ["0 */6 * * *", "*/15 * * * *", "0 9 * * 1-5", "@daily"])
def test_cron_accepts(text: str) -> None:
    assert str(Holder.model_validate({"cron": text}).cron) == text


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("61 * * * *", "out of range"),
        ("* * * *", "got 4 field(s)"),
        ("0 0 * * * *", "got 6 field(s)"),
        ("@sometimes", "five-field cron expression"),
        ("every day", "five-field cron expression"),
    ],
)
def test_cron_rejects(text: str, detail: str) -> None:
    with pytest.raises(ValidationError) as info:
        Holder.model_validate({"cron": text})
    message = str(info.value)
    assert detail in message
    assert "minute hour day-of-month month day-of-week" in message


def test_cron_next_after_and_previous_before() -> None:
    cron = CronSchedule("0 */6 * * *")
    now = datetime(2025, 1, 15, 7, 30, tzinfo=UTC)
    assert cron.next_after(now) == datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
    assert cron.previous_before(now) == datetime(2025, 1, 15, 6, 0, tzinfo=UTC)
    assert CronSchedule("@daily").next_after(now) == datetime(2025, 1, 16, tzinfo=UTC)


def test_cron_normalises_whitespace_and_compares() -> None:
    assert CronSchedule("0  */6 * *  *") == CronSchedule("0 */6 * * *")
    assert CronSchedule("0  */6 * *  *").expression == "0 */6 * * *"


def test_json_schema_is_generated() -> None:
    schema = Holder.model_json_schema()
    duration = schema["properties"]["duration"]["anyOf"][0]
    assert duration["type"] == "string"
    assert "pattern" in duration
