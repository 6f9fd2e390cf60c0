"""List parameters (``limit``, ``offset``, ``only``, ``meta``, ``from``/``to``, ``after``,
``where``, ``sort``, ``cursor``) turned into a MongoDB filter, projection, order and page
bounds. Handlers never parse query strings; parameter values are only ever data, never
operators.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import Binary, Code, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128

from app import validation
from app.acl import HIDDEN, READERS
from app.clock import parse_time
from app.errors import BadRequest, Invalid
from app.filters import Where, parse_where
from app.jsonio import ms

MAX_LIMIT = 10000
_KNOWN = (
    "limit", "offset", "only", "meta", "from", "to", "begin", "end", "after", "where", "sort",
    "cursor",
)  # fmt: skip
MAX_SORT_KEYS = 4
_BIG = 10**15


def _int(raw: str, name: str) -> int:
    """A non-negative whole number; any beyond ``_BIG`` reads as ``_BIG`` (past every page)."""
    if not re.fullmatch(r"[0-9]+", raw):
        raise BadRequest(f"{name} must be a non-negative whole number")
    digits = raw.lstrip("0")
    return _BIG if len(digits) > len(str(_BIG)) else min(int(digits or "0"), _BIG)


@dataclass(frozen=True)
class Only:
    """``only``: the paths to return (``_id`` always comes too), or with ``exclude`` the
    paths to leave out (``only=-notes,-history``)."""

    paths: tuple[str, ...]
    exclude: bool = False

    def projection(self) -> dict[str, int]:
        if self.exclude:
            return {path: 0 for path in self.paths}
        return {"_id": 1, **{path: 1 for path in self.paths if path != "_id"}}

    def text(self) -> str:
        return ",".join(("-" + p) if self.exclude else p for p in self.paths)


MAX_ONLY_FIELDS = 100  # projecting costs work per field for every entity (and every event)


def only_fields(raw: str, name: str = "only") -> Only:
    if raw.count(",") >= MAX_ONLY_FIELDS:
        raise Invalid(name, f"at most {MAX_ONLY_FIELDS} fields")
    fields = list(dict.fromkeys(f.strip() for f in raw.split(",")))
    if not fields or any(not f for f in fields):
        raise Invalid(name, "expected a comma-separated list of field names")
    excluded = [f.startswith("-") for f in fields]
    if any(excluded) and not all(excluded):
        raise Invalid(name, "list fields to return or fields to leave out (-name), not both")
    exclude = all(excluded)
    paths = [f[1:] for f in fields] if exclude else fields
    for field in paths:
        segments = validation.path(field)
        if segments[0] in HIDDEN:
            raise Invalid(name, f"{field!r} is not a field")
        if exclude and field == "_id":
            raise Invalid(name, "_id is always returned")
    validation.no_overlap([f for f in paths if f != "_id"], name)
    return Only(tuple(paths), exclude)


def projection(only: Only | None) -> dict[str, int] | None:
    """The projection for ``only``; without it, None: whole documents are read and the entity
    layer drops the hidden fields before they leave the server (an exclusion projection of
    its own would make the database copy every document)."""
    return only.projection() if only is not None else None


# --- sort and cursors ------------------------------------------------------------------------

# MongoDB's order of BSON types in a sort, lowest first, as $type names.
_TYPE_ORDER: tuple[tuple[str, ...], ...] = (
    ("minKey",),
    ("null",),
    ("double", "int", "long", "decimal"),
    ("string", "symbol"),
    ("object",),
    ("array",),
    ("binData",),
    ("objectId",),
    ("bool",),
    ("date",),
    ("timestamp",),
    ("regex",),
    ("javascript", "javascriptWithScope"),
    ("maxKey",),
)
_NULL = 1


def _type_rank(value: Any) -> int:
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return 8
    if isinstance(value, (int, float, Decimal128)):
        return 2
    if isinstance(value, Code):
        return 12
    if isinstance(value, str):
        return 3
    if isinstance(value, dict):
        return 4
    if isinstance(value, list):
        return 5
    if isinstance(value, (bytes, Binary)):
        return 6
    if isinstance(value, ObjectId):
        return 7
    if isinstance(value, (datetime, DatetimeMS)):
        return 9
    if isinstance(value, Timestamp):
        return 10
    if isinstance(value, Regex):
        return 11
    if isinstance(value, MinKey):
        return 0
    if isinstance(value, MaxKey):
        return 13
    return 4


@dataclass(frozen=True)
class Sort:
    """``sort=-amount,title``: field paths with their directions; ``_id`` ascending ends the
    order unless it is named, so the order is total."""

    keys: tuple[tuple[str, int], ...]

    @property
    def total(self) -> tuple[tuple[str, int], ...]:
        if any(path == "_id" for path, _ in self.keys):
            return self.keys
        return (*self.keys, ("_id", 1))

    def text(self) -> str:
        return ",".join(("-" if d < 0 else "") + p for p, d in self.keys)

    def reversed(self) -> list[tuple[str, int]]:
        return [(path, -direction) for path, direction in self.total]

    def after(self, values: Sequence[Any], last_id: ObjectId) -> dict[str, Any]:
        """The filter for entities that sort after one with these sort ``values`` and id:
        for each key, those equal on the keys before it and after on it. Type-aware, as
        MongoDB orders mixed types (a missing field sorts as null)."""
        keyed = list(zip([p for p, _ in self.total], [*values, last_id], strict=False))
        branches = []
        for index, (path, direction) in enumerate(self.total):
            value = keyed[index][1] if index < len(keyed) else None
            equal = [_equal_to(p, v) for p, v in keyed[:index]]
            branches.append({"$and": [*equal, _beyond(path, value, direction)]})
        return {"$or": branches}


def _equal_to(path: str, value: Any) -> dict[str, Any]:
    return {path: {"$eq": value}}  # null also matches a missing field, as a sort ranks it


def _beyond(path: str, value: Any, direction: int) -> dict[str, Any]:
    """Entities whose ``path`` sorts strictly after ``value`` in ``direction``."""
    if path == "_id":
        return {path: {"$gt" if direction > 0 else "$lt": value}}
    rank = _type_rank(value)
    comparable = value is not None and not isinstance(value, (dict, list))
    options: list[dict[str, Any]] = []
    if direction > 0:
        if comparable:
            options.append({path: {"$gt": value}})
        later = [name for names in _TYPE_ORDER[rank + 1 :] for name in names]
        if later:
            options.append({path: {"$type": later}})
    else:
        if comparable:
            options.append({path: {"$lt": value}})
        if rank > _NULL:
            options.append({path: {"$eq": None}})  # null and missing sort below the rest
            earlier = [name for names in _TYPE_ORDER[_NULL + 1 : rank] for name in names]
            if earlier:
                options.append({path: {"$type": earlier}})
    if not options:
        return {"_id": {"$exists": False}}  # nothing sorts beyond: matches no entity
    return options[0] if len(options) == 1 else {"$or": options}


def parse_sort(raw: str, name: str = "sort") -> Sort:
    entries = [e.strip() for e in raw.split(",")]
    if not entries or any(not e or e in ("-", "+") for e in entries):
        raise Invalid(name, "expected comma-separated field paths, - before one for descending")
    if len(entries) > MAX_SORT_KEYS:
        raise Invalid(name, f"at most {MAX_SORT_KEYS} fields")
    keys: list[tuple[str, int]] = []
    for entry in entries:
        direction = -1 if entry.startswith("-") else 1
        path = entry[1:] if entry[0] in "+-" else entry
        segments = validation.path(path)
        if path != "_id" and segments[0].startswith("_"):
            raise Invalid(name, f"{path!r}: fields starting with '_' cannot be sorted on")
        if any(validation.digits(s) for s in segments):
            raise Invalid(name, f"{path!r}: array positions cannot be sorted on")
        keys.append((path, direction))
    if len({p for p, _ in keys}) != len(keys):
        raise Invalid(name, "names a field twice")
    return Sort(tuple(keys))


def _conjuncts(query: dict[str, Any]) -> list[dict[str, Any]]:
    """The parts of a filter that must all hold, ``$and`` unnested."""
    if list(query) == ["$and"]:
        return [leaf for part in query["$and"] for leaf in _conjuncts(part)]
    return [query]


def sort_value(document: Any, path: str) -> Any:
    """The value ``path`` holds in ``document`` for a cursor (None when missing, which sorts
    as null)."""
    for segment in path.split("."):
        if not isinstance(document, dict) or segment not in document:
            return None
        document = document[segment]
    return document


@dataclass(frozen=True)
class Resume:
    """Where a page ended: the last entity's sort values and id (from a cursor). The id is an
    ObjectId, unless another program stored the entity under an id of another type."""

    values: tuple[Any, ...]
    id: Any


@dataclass(frozen=True)
class ListQuery:
    limit: int = MAX_LIMIT
    offset: int = 0
    only: Only | None = None
    meta: bool = False
    created_from: datetime | None = None
    created_to: datetime | None = None
    after: ObjectId | None = None
    where: Where | None = None
    sort: Sort | None = None
    cursor: Resume | None = None

    def bounds(self) -> dict[str, Any]:
        """The filter for ``from``/``to``, ``after``, ``cursor`` and ``where`` (the caller
        adds the read rule)."""
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
        parts: list[dict[str, Any]] = []
        if self.where is not None:
            parts.extend(_conjuncts(self.where.query()))
        if self.cursor is not None and self.sort is not None:
            parts.append(self.sort.after(self.cursor.values, self.cursor.id))
        rest = []
        for part in parts:
            # A condition on a field nothing else names joins the top level, where every
            # database plans it best (the embedded one only uses indexes for those).
            [(key, condition)] = part.items() if len(part) == 1 else [("", None)]
            if key and not key.startswith("$") and key not in found and key != READERS:
                found[key] = condition
            else:
                rest.append(part)
        if rest:
            found["$and"] = rest
        return found

    def order(self) -> list[tuple[str, int]]:
        return list(self.sort.total) if self.sort is not None else [("_id", 1)]

    def projection(self) -> dict[str, int] | None:
        return projection(self.only)

    def next_params(
        self, cursor: str | None = None, last_id: ObjectId | None = None
    ) -> dict[str, str]:
        """Query parameters for the next page: by ``cursor`` (sorted lists) or ``after``."""
        params: dict[str, str] = {}
        if cursor is not None:
            params["cursor"] = cursor
        elif last_id is not None:
            params["after"] = str(last_id)
        params["limit"] = str(self.limit)
        if self.sort is not None:
            params["sort"] = self.sort.text()
        if self.where is not None:
            params["where"] = self.where.text
        if self.only:
            params["only"] = self.only.text()
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


def parse_list_query(
    params: Mapping[str, Sequence[str]],
    read_cursor: Callable[[str, Sort], Resume] | None = None,
) -> ListQuery:
    """``params`` maps each name to all its values; unknown names are ignored.
    ``read_cursor`` checks and decodes a ``cursor`` for the given sort (it holds the key)."""
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

    only = only_fields(single["only"]) if "only" in single else None
    after = validation.object_id(single["after"], "after") if "after" in single else None
    where = parse_where(single["where"]) if "where" in single else None
    sort = parse_sort(single["sort"]) if "sort" in single else None
    if sort is not None and after is not None:
        raise Invalid("after", "only pages the default order; a sorted list pages by cursor")
    cursor = None
    if "cursor" in single:
        if sort is None or read_cursor is None:
            raise Invalid("cursor", "belongs to a sorted list: send it with its sort")
        if meta:
            raise BadRequest("meta cannot be combined with cursor")
        cursor = read_cursor(single["cursor"], sort)
    return ListQuery(
        limit=limit,
        offset=offset,
        only=only,
        meta=meta,
        created_from=bounds.get("from"),
        created_to=bounds.get("to"),
        after=after,
        where=where,
        sort=sort,
        cursor=cursor,
    )
