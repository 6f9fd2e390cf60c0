"""The server's clock, at BSON's millisecond precision (what the database keeps), and the
times clients send (Unix milliseconds or ISO 8601)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from app.errors import Invalid


def now() -> datetime:
    """The current time at BSON's millisecond precision."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})"
    r"(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+\- ]\d{2}:?\d{2})?"
)
_MILLIS = re.compile(r"-?\d{1,15}")


def parse_time(raw: str, name: str) -> datetime:
    """Unix time in milliseconds, or ISO 8601 ``YYYY-MM-DDThh:mm[:ss[.fff]][Z|±hh:mm]``
    (no offset means UTC)."""
    if _MILLIS.fullmatch(raw):
        try:
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(raw))
        except OverflowError:
            raise Invalid(name, "time is out of range") from None
    match = _ISO.fullmatch(raw)
    if not match:
        raise Invalid(name, "expected Unix milliseconds or ISO 8601 (YYYY-MM-DDThh:mm)")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    tz: timezone = UTC
    if offset and offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            raise Invalid(name, "offset is out of range")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")[:6]),
            tzinfo=tz,
        )
        return moment.astimezone(UTC)
    except ValueError as exc:
        raise Invalid(name, f"not a valid time ({exc})") from None
    except OverflowError:  # valid fields whose UTC instant is before year 1 or after 9999
        raise Invalid(name, "time is out of range") from None
