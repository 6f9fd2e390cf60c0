"""The ``where`` filter: its grammar, the MongoDB query it becomes, and the same test run in
memory on one document (realtime subscriptions), meaning exactly what the query means.

A filter is JSON in the style of Directus: field paths to conditions, ``_``-operators, and
``_and``/``_or``/``_not``. No client key ever reaches MongoDB as an operator: the grammar is
parsed into nodes, and the query is built from those, with every client value placed where
MongoDB reads it as data.

The in-memory test follows MongoDB's matching rules for the values a filter can hold: a path
through an array reaches the field in each of its object elements; a condition on a field
holding an array holds when the array or one of its elements satisfies it; a missing field
equals null; range operators compare only within one type (numbers with numbers, strings
with strings, dates with dates); booleans are not numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128

from app import jsonio, validation
from app.clock import parse_time
from app.errors import Invalid

MAX_BYTES = 4096
MAX_CONDITIONS = 50
MAX_DEPTH = 5
MAX_LIST = 100
MAX_STRING_BYTES = 1024
TIME_FIELDS = frozenset({"createdAt", "updatedAt"})

_COMPARE = {"_eq": "$eq", "_neq": "$ne", "_gt": "$gt", "_gte": "$gte", "_lt": "$lt", "_lte": "$lte"}
_RANGE = frozenset({"_gt", "_gte", "_lt", "_lte"})
_LISTS = {"_in": "$in", "_nin": "$nin"}
_TEXT = frozenset({"_contains", "_icontains", "_starts_with"})
_FLAGS = frozenset({"_exists", "_null"})
_LOGIC = frozenset({"_and", "_or", "_not"})
OPERATORS = frozenset({*_COMPARE, *_LISTS, *_TEXT, *_FLAGS})


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


# --- nodes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One operator on one field path."""

    path: str
    op: str
    value: Any

    def query(self) -> dict[str, Any]:
        if self.op == "_eq":
            return {self.path: self.value}  # a bare scalar: equality, planned best everywhere
        if self.op in _COMPARE:
            return {self.path: {_COMPARE[self.op]: self.value}}
        if self.op in _LISTS:
            return {self.path: {_LISTS[self.op]: list(self.value)}}
        if self.op == "_exists":
            return {self.path: {"$exists": self.value}}
        if self.op == "_null":
            return {self.path: {"$eq" if self.value else "$ne": None}}
        pattern = _literal(self.value)
        if self.op == "_starts_with":
            return {self.path: {"$regex": "^" + pattern}}
        if self.op == "_icontains":
            return {self.path: {"$regex": pattern, "$options": "i"}}
        return {self.path: {"$regex": pattern}}

    def matches(self, document: dict[str, Any]) -> bool:
        values = resolve(document, self.path)
        op, value = self.op, self.value
        if op == "_eq":
            return _equal_any(values, value)
        if op == "_neq":
            return not _equal_any(values, value)
        if op in _RANGE:
            return _compare_any(values, value, _ORDER[op])
        if op == "_in":
            return any(_equal_any(values, item) for item in value)
        if op == "_nin":
            return not any(_equal_any(values, item) for item in value)
        if op == "_exists":
            return any(v is not MISSING for v in values) is bool(value)
        if op == "_null":
            return _equal_any(values, None) is bool(value)
        return _search_any(values, _compiled(op, value))


@dataclass(frozen=True)
class All:
    parts: tuple[Node, ...]

    def query(self) -> dict[str, Any]:
        return {"$and": [part.query() for part in self.parts]}

    def matches(self, document: dict[str, Any]) -> bool:
        return all(part.matches(document) for part in self.parts)


@dataclass(frozen=True)
class Any_:
    parts: tuple[Node, ...]

    def query(self) -> dict[str, Any]:
        return {"$or": [part.query() for part in self.parts]}

    def matches(self, document: dict[str, Any]) -> bool:
        return any(part.matches(document) for part in self.parts)


@dataclass(frozen=True)
class Not:
    part: Node

    def query(self) -> dict[str, Any]:
        return {"$nor": [self.part.query()]}

    def matches(self, document: dict[str, Any]) -> bool:
        return not self.part.matches(document)


Node = Condition | All | Any_ | Not


@dataclass(frozen=True)
class Where:
    """A parsed filter, with the text it came from (for the next page's link)."""

    root: Node
    text: str

    def query(self) -> dict[str, Any]:
        return self.root.query()

    def matches(self, document: dict[str, Any] | None) -> bool:
        return document is not None and self.root.matches(document)


# --- parsing --------------------------------------------------------------------------------


def parse_where(raw: str, name: str = "where") -> Where:
    """A ``where`` parameter (JSON text); 400 INVALID naming what is wrong."""
    if len(raw.encode()) > MAX_BYTES:
        raise Invalid(name, f"is limited to {MAX_BYTES} bytes")
    try:
        data = jsonio.loads(raw)
    except jsonio.OutOfRange as exc:
        raise Invalid(f"{name}.{exc.path}", "integers must fit in 64 bits") from None
    except ValueError:
        raise Invalid(name, "is not valid JSON") from None
    return from_json(data, name, raw)


def from_json(data: Any, name: str = "where", text: str | None = None) -> Where:
    """A filter given as decoded JSON (the realtime ``subscribe`` option)."""
    if not isinstance(data, dict) or not data:
        raise Invalid(name, "must be a non-empty JSON object of field conditions")
    if text is None:
        try:
            text = orjson.dumps(data).decode()
        except TypeError:  # nested past what JSON text can hold
            raise Invalid(name, f"is limited to {MAX_BYTES} bytes") from None
        if len(text) > MAX_BYTES:
            raise Invalid(name, f"is limited to {MAX_BYTES} bytes")
    root = _Parser(name).group(data, "", 1)
    return Where(root, text)


class _Parser:
    def __init__(self, name: str):
        self.name = name
        self.conditions = 0

    def where(self, at: str) -> str:
        return f"{self.name}.{at}" if at else self.name

    def group(self, data: dict[str, Any], prefix: str, depth: int) -> Node:
        """An object: its entries ANDed (logical keys, field paths, or, under a field,
        operators and nested fields)."""
        if depth > MAX_DEPTH:
            raise Invalid(self.where(prefix), f"nesting deeper than {MAX_DEPTH} levels")
        parts: list[Node] = []
        for key, item in data.items():
            if not isinstance(key, str) or key == "":
                raise Invalid(self.where(prefix), "empty keys are not allowed")
            if key.startswith("$"):
                raise Invalid(self.where(_join(prefix, key)), "keys must not start with '$'")
            if key in _LOGIC:
                if prefix:
                    raise Invalid(self.where(_join(prefix, key)), "logic belongs at the top level")
                parts.append(self.logic(key, item, depth))
            elif key.startswith("_") and prefix:
                parts.append(self.operator(prefix, key, item))
            elif key.startswith("_"):
                raise Invalid(self.where(key), _unknown(key, "fields starting with '_'"))
            else:
                parts.append(self.field(_join(prefix, key), item, depth))
        return parts[0] if len(parts) == 1 else All(tuple(parts))

    def logic(self, key: str, item: Any, depth: int) -> Node:
        if key == "_not":
            if not isinstance(item, dict) or not item:
                raise Invalid(self.where(key), "takes a non-empty object of conditions")
            return Not(self.group(item, "", depth + 1))
        if not isinstance(item, list) or not item:
            raise Invalid(self.where(key), "takes a non-empty array of condition objects")
        parts = []
        for index, entry in enumerate(item):
            if not isinstance(entry, dict) or not entry:
                raise Invalid(self.where(f"{key}.{index}"), "must be a non-empty object")
            parts.append(self.group(entry, "", depth + 1))
        return All(tuple(parts)) if key == "_and" else Any_(tuple(parts))

    def field(self, path: str, item: Any, depth: int) -> Node:
        segments = validation.path(path)
        if segments[0].startswith("_"):
            raise Invalid(self.where(path), "fields starting with '_' cannot be filtered")
        if any(validation.digits(s) for s in segments):
            raise Invalid(self.where(path), "array positions cannot be filtered (name a field)")
        if isinstance(item, dict):
            if not item:
                raise Invalid(self.where(path), "an empty condition")
            return self.group(item, path, depth + 1)
        return self.operator(path, "_eq", item)

    def operator(self, path: str, op: str, item: Any) -> Condition:
        at = self.where(f"{path}.{op}")
        if op not in OPERATORS:
            raise Invalid(at, _unknown(op, "this operator"))
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise Invalid(self.name, f"at most {MAX_CONDITIONS} conditions")
        timed = path in TIME_FIELDS
        if op in _FLAGS:
            if not isinstance(item, bool):
                raise Invalid(at, "takes true or false")
            return Condition(path, op, item)
        if op in _LISTS:
            if not isinstance(item, list) or len(item) > MAX_LIST:
                raise Invalid(at, f"takes an array of at most {MAX_LIST} values")
            values = tuple(self.scalar(v, f"{at}.{i}", timed) for i, v in enumerate(item))
            return Condition(path, op, values)
        if op in _TEXT:
            if not isinstance(item, str) or not item or timed:
                raise Invalid(at, "takes a non-empty string (and not on a time field)")
            self.scalar(item, at, False)
            if "\x00" in item:
                raise Invalid(at, "strings must not contain NUL")
            return Condition(path, op, item)
        value = self.scalar(item, at, timed)
        if op in _RANGE and (value is None or isinstance(value, bool)):
            raise Invalid(at, "compares numbers, strings or times")
        return Condition(path, op, value)

    def scalar(self, item: Any, at: str, timed: bool) -> Any:
        if timed and item is not None:
            if isinstance(item, bool) or not isinstance(item, (int, str)):
                raise Invalid(at, "takes Unix milliseconds or an ISO 8601 time")
            return parse_time(str(item), at)
        if isinstance(item, (dict, list)):
            raise Invalid(at, "takes a string, number, boolean or null")
        if isinstance(item, str) and len(item.encode()) > MAX_STRING_BYTES:
            raise Invalid(at, f"strings are limited to {MAX_STRING_BYTES} bytes")
        if isinstance(item, int) and not isinstance(item, bool):
            validation.value(item, at)  # 64-bit integers only
        return item


def _unknown(op: str, what: str) -> str:
    known = ", ".join(sorted(OPERATORS | _LOGIC))
    return f"{op!r}: {what} is not allowed; operators are {known}"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _literal(text: str) -> str:
    """``text`` as a regular expression that matches it literally (PCRE and Python alike):
    every ASCII character that is not a letter or digit is escaped."""
    return "".join(c if c.isalnum() or ord(c) > 127 else "\\" + c for c in text)


# --- matching in memory ----------------------------------------------------------------------


def resolve(document: Any, path: str) -> list[Any]:
    """The values ``path`` reaches in ``document``, as MongoDB's matcher sees them: MISSING
    where a field is absent; through an array, the field of each element that is an object."""
    current: list[Any] = [document]
    for segment in path.split("."):
        reached: list[Any] = []
        for value in current:
            if isinstance(value, dict):
                reached.append(value.get(segment, MISSING))
            elif isinstance(value, list):
                reached.extend(e.get(segment, MISSING) for e in value if isinstance(e, dict))
            else:
                reached.append(MISSING)
        current = reached
    return current


def _equal_any(values: list[Any], wanted: Any) -> bool:
    for value in values:
        if value is MISSING:
            if wanted is None:
                return True
        elif _equal(value, wanted) or (
            isinstance(value, list) and any(_equal(e, wanted) for e in value)
        ):
            return True
    return False


def _compare_any(values: list[Any], bound: Any, holds: Callable[[Any, Any], bool]) -> bool:
    kind = _kind(bound)
    key = _key(bound)
    for value in values:
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item is not MISSING and _kind(item) == kind and holds(_key(item), key):
                return True
    return False


def _search_any(values: list[Any], pattern: re.Pattern[str]) -> bool:
    for value in values:
        items = value if isinstance(value, list) else [value]
        if any(isinstance(i, str) and pattern.search(i) is not None for i in items):
            return True
    return False


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "_gt": lambda a, b: a > b,
    "_gte": lambda a, b: a >= b,
    "_lt": lambda a, b: a < b,
    "_lte": lambda a, b: a <= b,
}
_PATTERNS: dict[tuple[str, str], re.Pattern[str]] = {}


def _compiled(op: str, text: str) -> re.Pattern[str]:
    found = _PATTERNS.get((op, text))
    if found is None:
        if len(_PATTERNS) > 10_000:
            _PATTERNS.clear()
        pattern = ("^" if op == "_starts_with" else "") + _literal(text)
        flags = re.IGNORECASE if op == "_icontains" else 0
        found = _PATTERNS[(op, text)] = re.compile(pattern, flags)
    return found


def _kind(value: Any) -> str:
    """MongoDB's comparison family of a value (only values of one family compare)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, Decimal128)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (datetime, DatetimeMS)):
        return "date"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _key(value: Any) -> Any:
    """A value in a form Python compares as MongoDB does within its family."""
    if isinstance(value, DatetimeMS):
        return int(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    if isinstance(value, Decimal128):
        number = value.to_decimal()
        # A decimal NaN (quiet or signalling, stored by another program) raises when Python
        # orders or compares it; as a float NaN it matches no bound and equals nothing, as in
        # MongoDB (a filter from JSON cannot hold a NaN to match it).
        return float("nan") if number.is_nan() else number
    return value


def _equal(stored: Any, wanted: Any) -> bool:
    """Equality of a stored value and a filter's scalar, as MongoDB decides it."""
    kind = _kind(stored)
    if kind != _kind(wanted) or kind in ("object", "array"):
        return False
    return bool(_key(stored) == _key(wanted))


def conditions(node: Node) -> Iterator[Condition]:
    """Every condition in a filter (for index hints and tests)."""
    if isinstance(node, Condition):
        yield node
    elif isinstance(node, Not):
        yield from conditions(node.part)
    else:
        for part in node.parts:
            yield from conditions(part)
