"""JSON in and out: orjson with the platform's renderings of BSON types.

ObjectIds render as 24 lowercase hex characters; dates as ISO 8601 UTC with milliseconds and
``Z`` (``2026-11-25T17:47:20.178Z``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from bson import ObjectId
from bson.datetime_ms import DatetimeMS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_ms(value: datetime | DatetimeMS | int) -> str:
    """Format a date (or milliseconds since the epoch) as ISO 8601 UTC with milliseconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    millis = int(value)
    try:
        moment = _EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        return str(millis)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def ms(value: datetime) -> int:
    """Milliseconds since the epoch."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # Integer arithmetic: ``timestamp() * 1000`` in floats is a millisecond off for some times.
    return (value - _EPOCH) // timedelta(milliseconds=1)


def _default(value: Any) -> Any:
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
    return orjson.dumps(value, default=_default, option=_OPTS)


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ``orjson.JSONDecodeError`` (a ``ValueError``)."""
    return orjson.loads(data)
