"""Field types of the manifests: durations, sizes, cron schedules and bounded numbers.

:class:`Duration`, :class:`Size` and :class:`CronSchedule` validate the strings AOF
manifests use (``7d``, ``10GB``, ``0 */6 * * *``), keep the original text so a dumped
manifest reads as it was written, and give typed accessors (``.timedelta``, ``.bytes``,
``.next_after()``). Comparison and hashing use the meaning, not the spelling:
``Duration("1h") == Duration("60m")``.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from croniter import croniter
from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

__all__ = [
    "CronSchedule",
    "Duration",
    "Port",
    "Size",
    "UnitInterval",
]

Port = Annotated[int, Field(ge=1, le=65535)]
"""A TCP port number."""

UnitInterval = Annotated[float, Field(ge=0.0, le=1.0)]
"""A float between 0 and 1 inclusive (ratios, similarity thresholds)."""


def _type_name(value: object) -> str:
    return type(value).__name__


class _TextType:
    """Shared pydantic plumbing: validate from text, serialise back to the original text."""

    __slots__ = ("_text",)
    _text: str

    _JSON_SCHEMA: ClassVar[dict[str, Any]] = {}

    def __init__(self, value: Any) -> None:  # each subclass parses its own text
        self._text = str(value)

    @classmethod
    def _validate(cls, value: Any) -> Any:
        if isinstance(value, cls):
            return value
        return cls(value)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                str, return_schema=core_schema.str_schema()
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return dict(cls._JSON_SCHEMA)

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._text!r})"


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_RE = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_DURATION_UNITS = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
    "w": Decimal(604800),
}
_DURATION_HELP = (
    "expected a duration like 30s, 15m, 24h or 7d (units ms, s, m, h, d, w; "
    "parts may be combined, as in 1h30m)"
)


@functools.total_ordering
class Duration(_TextType):
    """A length of time written as ``30s``, ``15m``, ``24h``, ``7d``, ``2w``, ``500ms`` or a
    combination such as ``1h30m``.

    Accepts such a string, a :class:`datetime.timedelta` or another ``Duration``; dumps
    back to the string it was given.
    """

    __slots__ = ("_delta",)
    _JSON_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "string",
        "pattern": f"^{_DURATION_RE.pattern}$",
        "examples": ["7d"],
    }

    def __init__(self, value: str | timedelta) -> None:
        if isinstance(value, timedelta):
            if value < timedelta(0):
                raise PydanticCustomError("duration", "a duration cannot be negative")
            self._delta = value
            self._text = _format_timedelta(value)
            return
        if isinstance(value, int | float):
            raise PydanticCustomError("duration", _DURATION_HELP + "; a bare number has no unit")
        if not isinstance(value, str):
            raise PydanticCustomError(
                "duration", _DURATION_HELP + "; got a {type}", {"type": _type_name(value)}
            )
        text = value.strip()
        if not _DURATION_RE.fullmatch(text):
            raise PydanticCustomError("duration", _DURATION_HELP)
        total = sum(
            Decimal(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text)
        )
        self._delta = timedelta(seconds=float(total))
        self._text = text

    @property
    def timedelta(self) -> timedelta:
        """The duration as a :class:`datetime.timedelta`."""
        return self._delta

    @property
    def seconds(self) -> float:
        """Total seconds (fractional for ``ms``)."""
        return self._delta.total_seconds()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Duration):
            return self._delta == other._delta
        if isinstance(other, timedelta):
            return self._delta == other
        return NotImplemented

    def __lt__(self, other: object) -> bool:
        if isinstance(other, Duration):
            return self._delta < other._delta
        if isinstance(other, timedelta):
            return self._delta < other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._delta)


def _format_timedelta(delta: timedelta) -> str:
    millis = round(delta.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")
_SIZE_UNITS: dict[str, int] = {"": 1, "b": 1}
for _i, _prefix in enumerate("kmgtpe", start=1):
    _SIZE_UNITS[_prefix] = _SIZE_UNITS[f"{_prefix}b"] = 1000**_i
    _SIZE_UNITS[f"{_prefix}i"] = _SIZE_UNITS[f"{_prefix}ib"] = 1024**_i
_SIZE_HELP = (
    "expected a size like 512Mi, 10GB or 1.5TB (decimal units B, KB, MB, GB, TB, PB; "
    "binary units Ki, Mi, Gi, Ti, Pi), or a whole number of bytes"
)


@functools.total_ordering
class Size(_TextType):
    """An amount of storage: ``10GB``, ``512Mi``, ``1.5TB`` or a number of bytes.

    Units are case-insensitive; ``K/KB/M/MB/...`` are powers of 1000, ``Ki/KiB/Mi/...``
    powers of 1024. Dumps back to the string it was given.
    """

    __slots__ = ("_bytes",)
    _JSON_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "string",
        "pattern": f"^{_SIZE_RE.pattern}$",
        "examples": ["10GB"],
    }

    def __init__(self, value: str | int) -> None:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise PydanticCustomError("size", "a size cannot be negative")
            self._bytes = value
            self._text = str(value)
            return
        if not isinstance(value, str):
            raise PydanticCustomError(
                "size", _SIZE_HELP + "; got a {type}", {"type": _type_name(value)}
            )
        text = value.strip()
        match = _SIZE_RE.fullmatch(text)
        if match is None or match.group(2).lower() not in _SIZE_UNITS:
            raise PydanticCustomError("size", _SIZE_HELP)
        self._bytes = int(Decimal(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
        self._text = text

    @property
    def bytes(self) -> int:
        """The size in bytes (rounded down)."""
        return self._bytes

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Size):
            return self._bytes == other._bytes
        return NotImplemented

    def __lt__(self, other: object) -> bool:
        if isinstance(other, Size):
            return self._bytes < other._bytes
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._bytes)


_CRON_MACROS = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_CRON_HELP = (
    "expected a five-field cron expression 'minute hour day-of-month month day-of-week' "
    "such as '0 */6 * * *', or one of " + ", ".join(sorted(_CRON_MACROS))
)


class CronSchedule(_TextType):
    """A five-field cron expression (``0 */6 * * *``) or a macro such as ``@daily``,
    checked with croniter."""

    __slots__ = ()
    _JSON_SCHEMA: ClassVar[dict[str, Any]] = {"type": "string", "examples": ["0 */6 * * *"]}

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise PydanticCustomError(
                "cron", _CRON_HELP + "; got a {type}", {"type": _type_name(value)}
            )
        text = " ".join(value.split())
        if text.startswith("@"):
            if text not in _CRON_MACROS:
                raise PydanticCustomError("cron", _CRON_HELP)
        else:
            fields = len(text.split())
            if fields != 5:
                raise PydanticCustomError(
                    "cron", "got {fields} field(s); " + _CRON_HELP, {"fields": fields}
                )
            try:
                croniter(text)
            except (ValueError, KeyError) as exc:  # croniter's errors derive from ValueError
                raise PydanticCustomError(
                    "cron", "{detail}; " + _CRON_HELP, {"detail": str(exc)}
                ) from None
        self._text = text

    @property
    def expression(self) -> str:
        """The expression, whitespace normalised."""
        return self._text

    def next_after(self, when: datetime) -> datetime:
        """The first time strictly after ``when`` that the schedule fires (same tzinfo)."""
        result: datetime = croniter(self._text, when).get_next(datetime)
        return result

    def previous_before(self, when: datetime) -> datetime:
        """The last time strictly before ``when`` that the schedule fired (same tzinfo)."""
        result: datetime = croniter(self._text, when).get_prev(datetime)
        return result

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CronSchedule):
            return self._text == other._text
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._text)
