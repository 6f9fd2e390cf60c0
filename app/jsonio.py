"""JSON in and out: orjson with the platform's renderings of BSON types.

ObjectIds render as 24 lowercase hex characters; dates as ISO 8601 UTC with milliseconds and
``Z`` (``2026-11-25T17:47:20.178Z``).

Rendering never fails: whatever a document holds (nesting deeper than orjson follows, values
of any BSON type, written by this server or by another program), ``dumps`` falls back to an
encoder without recursion. Parsing keeps integers exact: a literal beyond 64 bits raises
``OutOfRange`` naming where it is, instead of quietly becoming a float.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from bson import ObjectId
from bson.datetime_ms import DatetimeMS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)  # UTC without tzinfo, for arithmetic
_INT64 = (-(2**63), 2**63 - 1)
# Every integer beyond 64 bits has at least 19 digits; shorter runs never need a second look.
_LONG_DIGITS_BYTES = re.compile(rb"[0-9]{19}")
_LONG_DIGITS_TEXT = re.compile(r"[0-9]{19}")


class OutOfRange(ValueError):
    """A JSON integer literal outside the signed 64-bit range; ``path`` says where."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"{path}: integers must fit in 64 bits")

    def in_event_argument(self) -> str:
        """The path inside a socket event's argument: the packet is ``["name", arg, ...]``,
        so the leading array index goes, and the argument itself is ``body``."""
        return self.path.partition(".")[2] or "body"


def iso_ms(value: datetime | DatetimeMS | int) -> str:
    """Format a date (or milliseconds since the epoch) as ISO 8601 UTC with milliseconds."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return _iso(value)
    return _iso_millis(int(value))


def _iso_millis(millis: int) -> str:
    try:
        moment = _NAIVE_EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        return str(millis)
    return _iso(moment)


def _iso(naive_utc: datetime) -> str:
    # isoformat is C code (and pads years to four digits); strftime was a visible share of a
    # GET's CPU.
    return naive_utc.isoformat(timespec="milliseconds") + "Z"


def ms(value: datetime) -> int:
    """Milliseconds since the epoch."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # Integer arithmetic: ``timestamp() * 1000`` in floats is a millisecond off for some times.
    return (value - _EPOCH) // timedelta(milliseconds=1)


def _default(value: Any) -> Any:
    kind = type(value)
    # The two types of (almost) every entity first, by exact type: lists render thousands.
    if kind is ObjectId:
        return value.binary.hex()
    if kind is DatetimeMS:
        return _iso_millis(int(value))
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, (DatetimeMS, datetime)):
        return iso_ms(value)
    if isinstance(value, bytes):
        return value.hex()
    # Other BSON types (Decimal128, Int64 subclasses, ...) written directly to the database.
    return str(value)


_OPTS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_default, option=_OPTS)
    except orjson.JSONEncodeError:
        return safe_dumps(value)


def dumps_items(values: list[Any]) -> bytes:
    """The items of ``values`` as JSON, comma-separated, without the brackets: one encoder call
    for all of them (calling it per item cost ten times as much for small entities)."""
    try:
        return orjson.dumps(values, default=_default, option=_OPTS)[1:-1]
    except orjson.JSONEncodeError:
        return b",".join(dumps(value) for value in values)


def safe_dumps(value: Any) -> bytes:
    """JSON for any value at any depth, with an explicit stack instead of recursion. Scalars
    go through orjson one by one; anything it refuses is rendered as text."""
    out = bytearray()
    # Each frame: (iterator over the container's items, closing byte, is_dict, first?).
    stack: list[list[Any]] = []
    pending: Any = value
    have_value = True
    while True:
        if have_value:
            item = pending
            if isinstance(item, dict):
                out += b"{"
                stack.append([iter(item.items()), b"}", True, True])
            elif isinstance(item, (list, tuple)):
                out += b"["
                stack.append([iter(item), b"]", False, True])
            else:
                out += _scalar(item)
        if not stack:
            return bytes(out)
        frame = stack[-1]
        try:
            nxt = next(frame[0])
        except StopIteration:
            out += frame[1]
            stack.pop()
            have_value = False
            continue
        if not frame[3]:
            out += b","
        frame[3] = False
        if frame[2]:
            name, pending = nxt
            out += orjson.dumps(name if isinstance(name, str) else str(name))
            out += b":"
        else:
            pending = nxt
        have_value = True


def _scalar(item: Any) -> bytes:
    try:
        return orjson.dumps(item, default=_default, option=_OPTS)
    except (orjson.JSONEncodeError, TypeError, ValueError):
        return orjson.dumps(str(item))


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ``ValueError`` (``orjson.JSONDecodeError``) for text that is not
    JSON and ``OutOfRange`` for an integer beyond 64 bits."""
    parsed = orjson.loads(data)
    long_digits = _LONG_DIGITS_TEXT if isinstance(data, str) else _LONG_DIGITS_BYTES
    if long_digits.search(data) is None:  # type: ignore[arg-type]
        return parsed
    # orjson reads integers beyond 64 bits as floats; parse again with exact integers to
    # find them. Only bodies with a run of 19 digits somewhere pay for this.
    try:
        exact = json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    where = _out_of_range(exact)
    if where is not None:
        raise OutOfRange(where)
    return parsed


def _out_of_range(value: Any) -> str | None:
    """The path of the first integer beyond 64 bits in ``value``, or None."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not _INT64[0] <= item <= _INT64[1]:
                return where or "body"
        elif isinstance(item, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}.{i}" if where else str(i)) for i, v in enumerate(item))
    return None
