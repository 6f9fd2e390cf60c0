"""List parameters (``limit``, ``offset``, ``only``, ``meta``, ``from``/``to``, ``after``)
turned into a MongoDB filter, projection and page bounds. Handlers never parse query strings;
parameter values are only ever data, never operators.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from bson import ObjectId

from app import validation
from app.acl import HIDDEN
from app.errors import BadRequest, Invalid
from app.jsonio import ms

MAX_LIMIT = 10000
_KNOWN = ("limit", "offset", "only", "meta", "from", "to", "begin", "end", "after")
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})"
    r"(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+\- ]\d{2}:?\d{2})?"
)
_MILLIS = re.compile(r"-?\d{1,15}")
_BIG = 10**15


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


def _int(raw: str, name: str) -> int:
    """A non-negative whole number; any beyond ``_BIG`` reads as ``_BIG`` (past every page)."""
    if not re.fullmatch(r"[0-9]+", raw):
        raise BadRequest(f"{name} must be a non-negative whole number")
    digits = raw.lstrip("0")
    return _BIG if len(digits) > len(str(_BIG)) else min(int(digits or "0"), _BIG)


def only_fields(raw: str, name: str = "only") -> list[str]:
    fields = list(dict.fromkeys(f.strip() for f in raw.split(",")))
    if not fields or any(not f for f in fields):
        raise Invalid(name, "expected a comma-separated list of field names")
    for field in fields:
        segments = validation.path(field)
        if segments[0] in HIDDEN:
            raise Invalid(name, f"{field!r} is not a field")
    validation.no_overlap([f for f in fields if f != "_id"], name)
    return fields


def projection(fields: Sequence[str] | None) -> dict[str, int] | None:
    """Projection for ``only`` (``_id`` always kept); without it, None: whole documents are
    read and the entity layer drops ``_readers`` before they leave the server (an exclusion
    projection would make the database copy every document)."""
    if not fields:
        return None
    return {"_id": 1, **{f: 1 for f in fields if f != "_id"}}


@dataclass(frozen=True)
class ListQuery:
    limit: int = MAX_LIMIT
    offset: int = 0
    only: tuple[str, ...] | None = None
    meta: bool = False
    created_from: datetime | None = None
    created_to: datetime | None = None
    after: ObjectId | None = None

    def bounds(self) -> dict[str, Any]:
        """The filter for ``from``/``to`` and ``after`` (the caller adds the read rule)."""
        found: dict[str, Any] = {}
        created: dict[str, Any] = {}
        if self.created_from is not None:
            created["$gte"] = self.created_from
        if self.created_to is not None:
            created["$lte"] = self.created_to
        if created:
            found["createdAt"] = created
        if self.after is not None:
            found["_id"] = {"$gt": self.after}
        return found

    def projection(self) -> dict[str, int] | None:
        return projection(self.only)

    def next_params(self, last_id: ObjectId) -> dict[str, str]:
        """Query parameters for the page after one that ended at ``last_id``."""
        params = {"after": str(last_id), "limit": str(self.limit)}
        if self.only:
            params["only"] = ",".join(self.only)
        if self.created_from is not None:
            params["from"] = str(ms(self.created_from))
        if self.created_to is not None:
            params["to"] = str(ms(self.created_to))
        return params


def flag(raw: str | None, name: str) -> bool:
    """A true/false query parameter (``true``/``false``/``1``/``0``); absent is false."""
    if raw is None:
        return False
    lowered = raw.lower()
    if lowered not in ("true", "false", "1", "0"):
        raise Invalid(name, "expected true or false")
    return lowered in ("true", "1")


def parse_list_query(params: Mapping[str, Sequence[str]]) -> ListQuery:
    """``params`` maps each name to all its values; unknown names are ignored."""
    single: dict[str, str] = {}
    for name in _KNOWN:
        values = params.get(name) or []
        if len(values) > 1:
            raise BadRequest(f"{name} was given more than once")
        if values:
            single[name] = values[0]

    meta = flag(single.get("meta"), "meta")
    if meta and ("offset" in single or "limit" in single):
        raise BadRequest("meta cannot be combined with offset or limit")

    limit = min(_int(single["limit"], "limit"), MAX_LIMIT) if "limit" in single else MAX_LIMIT
    offset = _int(single["offset"], "offset") if "offset" in single else 0

    bounds: dict[str, datetime] = {}
    for name, synonym in (("from", "begin"), ("to", "end")):
        if name in single and synonym in single:
            raise BadRequest(f"{name} and {synonym} mean the same; give one")
        for given in (name, synonym):
            if given in single:
                bounds[name] = parse_time(single[given], given)

    only = tuple(only_fields(single["only"])) if "only" in single else None
    after = validation.object_id(single["after"], "after") if "after" in single else None
    return ListQuery(
        limit=limit,
        offset=offset,
        only=only,
        meta=meta,
        created_from=bounds.get("from"),
        created_to=bounds.get("to"),
        after=after,
    )
