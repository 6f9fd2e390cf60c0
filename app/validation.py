"""Checks on what clients send: store names, ids, and JSON documents bound for MongoDB.

Documents may hold any JSON, except keys that MongoDB would read as operators or paths
(``$``-prefixed, containing ``.`` or NUL, empty), integers outside 64 bits, and nesting
deeper than ``MAX_DEPTH``.

One depth rule covers every document the server writes: a value's depth is the number of
objects and arrays around it in the stored entity, so a value sent under the dotted key
``a.b.c`` starts three levels down (``value_at``), exactly as if it had been sent nested.
Field paths have limits of their own (``MAX_PATH_SEGMENTS``, ``MAX_PATH_LENGTH``) wherever
they appear.
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any

from bson import ObjectId

from app.errors import BadRequest, Invalid

STORE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
RESERVED_STORES = frozenset({"auth"})
# The names under /api/v1 of the system's own resources, never read as store names.
SYSTEM_NAMES = frozenset({"auth", "_me", "_users", "_tokens", "_stores", "_audit", "openapi.json"})
OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")
MAX_DEPTH = 64
MAX_PATH_SEGMENTS = MAX_DEPTH
MAX_PATH_LENGTH = 1024
MAX_LIST_ENTRIES = 1000
MAX_ARRAY_POSITION = 100_000  # the highest array position a PATCH path may name
_INT64 = (-(2**63), 2**63 - 1)


def store_name(name: str) -> str:
    if not STORE_NAME.fullmatch(name):
        raise Invalid("store", f"{name!r} is not a valid store name")
    if name in RESERVED_STORES:
        raise Invalid("store", f"{name!r} is reserved")
    return name


def object_id(value: str, field: str = "id") -> ObjectId:
    if not isinstance(value, str) or not OBJECT_ID.fullmatch(value):
        raise Invalid(field, "must be 24 hexadecimal characters")
    return ObjectId(value.lower())


def json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest("The body must be a JSON object")
    return value


def key(name: str, where: str) -> None:
    """A key that MongoDB stores literally."""
    if name == "":
        raise Invalid(where or "body", "empty keys are not allowed")
    if name.startswith("$"):
        raise Invalid(_join(where, name), "keys must not start with '$'")
    if "\x00" in name:
        raise Invalid(_join(where, name.replace("\x00", "\\0")), "keys must not contain NUL")
    if "." in name:
        raise Invalid(_join(where, name), "keys must not contain '.'")


def path(name: str) -> list[str]:
    """A dotted field path (PATCH keys, ``only``); returns its segments."""
    if len(name) > MAX_PATH_LENGTH:
        raise Invalid(name[:100] + "...", f"paths are limited to {MAX_PATH_LENGTH} characters")
    segments = name.split(".")
    if len(segments) > MAX_PATH_SEGMENTS:
        raise Invalid(name[:100] + "...", f"paths are limited to {MAX_PATH_SEGMENTS} segments")
    for segment in segments:
        if segment == "":
            raise Invalid(name or "field", "empty path segment")
        if segment.startswith("$"):
            raise Invalid(name, "path segments must not start with '$'")
        if "\x00" in segment:
            raise Invalid(name.replace("\x00", "\\0"), "paths must not contain NUL")
        if segment.isdigit() and not segment.isascii():
            # A position or a name? Databases differ (SecantusDB fails on "²"); 0-9 only.
            raise Invalid(name, "digits in a path must be 0-9")
    return segments


def digits(text: str) -> bool:
    """Whether ``text`` is a whole number in ASCII digits: what the database reads as an array
    position in a path, and the only form of a number in a parameter or header. (Superscript
    and Arabic-Indic digits pass ``str.isdigit`` too, and ``int`` refuses the first.)"""
    return text.isascii() and text.isdigit()


def revision(text: str) -> bool:
    """Whether ``text`` names a revision as the server shows them in ``ETag``: a 64-bit
    integer (an entity stored by another program may hold any, negative ones too)."""
    number = text[1:] if text.startswith("-") else text
    return 0 < len(number) <= 19 and digits(number)


def positions(document: Any, segments: list[str], key: str) -> None:
    """A PATCH path, on the entity as it is: where it goes through an array it must name a
    position (the database refuses a field name there), and the position is bounded (the
    database pads an array up to the position it is given, and so does the check of the
    entity's size and definition before the write)."""
    node = document
    for segment in segments:
        if isinstance(node, list):
            if not digits(segment):
                raise Invalid(key, "goes through an array: name a position (0, 1, ...) there")
            position = int(segment)
            if position > MAX_ARRAY_POSITION:
                raise Invalid(key, f"array positions go up to {MAX_ARRAY_POSITION}")
            node = node[position] if position < len(node) else None
        elif isinstance(node, dict):
            node = node.get(segment)
        else:
            return


def no_overlap(paths: list[str], what: str) -> None:
    """Refuse two paths where one is a prefix of the other (``a`` and ``a.b``)."""
    ordered = sorted(paths)
    for first, second in pairwise(ordered):
        if second == first or second.startswith(first + "."):
            raise Invalid(what, f"{first!r} and {second!r} overlap")


def document(fields: dict[str, Any]) -> None:
    """A whole entity body (create, and later bulk and import)."""
    value(fields, "", 0)


def value_at(segments: list[str], item: Any, key: str) -> None:
    """A value written under the dotted path ``segments`` (PATCH): it sits as deep as the
    path is long."""
    value(item, key, len(segments))


def value(item: Any, where: str, depth: int = 0) -> None:
    """A JSON value bound for the database, found ``depth`` levels into its document."""
    if depth > MAX_DEPTH:
        raise Invalid(where or "body", f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(item, dict):
        for name, child in item.items():
            key(name, where)
            value(child, _join(where, name), depth + 1)
    elif isinstance(item, list):
        for child in item:
            value(child, where, depth + 1)
    elif isinstance(item, int) and not _INT64[0] <= item <= _INT64[1]:
        raise Invalid(where or "body", "integers must fit in 64 bits")


def string_list(item: Any, field: str) -> list[str]:
    if not isinstance(item, list) or not all(isinstance(x, str) and x for x in item):
        raise Invalid(field, "must be a list of non-empty strings")
    if any(len(x) > 256 or "\x00" in x for x in item):
        raise Invalid(field, "entries must be at most 256 characters, without NUL")
    if len(item) > MAX_LIST_ENTRIES:
        raise Invalid(field, f"at most {MAX_LIST_ENTRIES} entries")
    return list(dict.fromkeys(item))


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
