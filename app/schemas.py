"""JSON Schema for store definitions: which schemas a definition may hold, and checking an
entity's own fields against one.

Validation is done by ``jsonschema-rs`` (draft 2020-12, compiled once per definition version).
Patterns run on its linear-time regex engine, so no schema can make a write spin on a
pathological value; the server never fetches a ``$ref`` (only ``#/...`` is allowed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import jsonschema_rs
import orjson

from app import jsonio, validation
from app.errors import Invalid

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Fields the server owns; a schema describes only the entity's own fields.
SERVER_FIELDS = frozenset({"_id", "owner", "group", "access", "branch", "createdAt", "updatedAt"})
MAX_PROPERTIES = 500
MAX_DEPTH = 32
MAX_ERRORS = 100
MAX_VALUE_CHARS = 100
# Keywords whose values are data, not subschemas: never read for $ref or properties.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
# Keywords that hold a map of names to subschemas.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})


@dataclass(frozen=True)
class Violation:
    field: str
    rule: str
    message: str

    def public(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "message": self.message}


def _refuse_remote(uri: str) -> NoReturn:
    raise ValueError(f"the server does not fetch {uri}")


class Schema:
    """A compiled store schema: defaults, read-only paths and the checks."""

    def __init__(self, raw: dict[str, Any]):
        check_schema(raw)
        try:
            self._validator = jsonschema_rs.Draft202012Validator(
                raw,
                validate_formats=True,
                pattern_options=jsonschema_rs.RegexOptions(),
                retriever=_refuse_remote,
            )
        except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
            raise Invalid("schema", _first_line(str(exc))) from None
        self.raw = raw
        self.read_only: tuple[tuple[str, ...], ...] = tuple(_read_only_paths(raw, ()))
        self._defaults = _defaults(raw)

    def with_defaults(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` with the schema's defaults filled in where a value is missing: at the top
        level, and inside nested objects that are present. ``fields`` is not changed."""
        return _fill(fields, self._defaults) if self._defaults else fields

    def violations(self, fields: dict[str, Any]) -> list[Violation]:
        """Every violation of the schema by ``fields`` (JSON values only), at most MAX_ERRORS."""
        if self._validator.is_valid(fields):
            return []
        found: list[Violation] = []
        for error in self._validator.iter_errors(fields):
            found.append(_violation(error))
            if len(found) >= MAX_ERRORS:
                break
        return found

    def check(self, fields: dict[str, Any]) -> None:
        """Raise 400 INVALID listing every violation (the message names the first)."""
        found = self.violations(fields)
        if found:
            raise invalid(found)


def invalid(found: list[Violation]) -> Invalid:
    first = found[0]
    return Invalid(first.field or "entity", first.message, errors=[v.public() for v in found])


def json_form(document: dict[str, Any]) -> dict[str, Any]:
    """A stored document as its JSON rendering (dates as ISO text, ids as hex), which is what
    the schema describes and what clients see."""
    try:
        loaded: dict[str, Any] = orjson.loads(jsonio.dumps(document))
    except orjson.JSONDecodeError:  # nested past orjson's limit: stored by another program
        raise Invalid("entity", "the stored entity is nested too deep to be checked") from None
    return loaded


def own_fields(document: dict[str, Any]) -> dict[str, Any]:
    """The entity's own fields: all but the server's and the hidden ``_`` ones."""
    return {k: v for k, v in document.items() if k not in SERVER_FIELDS and not k.startswith("_")}


def check_schema(raw: Any) -> None:
    """Refuse a schema a definition cannot hold, with a message that says why."""
    if not isinstance(raw, dict):
        raise Invalid("schema", "must be a JSON Schema object")
    if raw.get("type") != "object":
        raise Invalid("schema", 'must have "type": "object" (an entity is an object)')
    dialect = raw.get("$schema", DIALECT)
    if dialect not in (DIALECT, DIALECT + "#"):
        raise Invalid("schema.$schema", f"only JSON Schema 2020-12 ({DIALECT}) is supported")
    for name in _top_level_names(raw):
        if name in SERVER_FIELDS or name.startswith("_"):
            raise Invalid(f"schema.properties.{name}", "is a server field; it cannot be defined")
    counted = 0
    for where, depth, node in _subschemas(raw):
        if depth > MAX_DEPTH:
            raise Invalid(where, f"schemas may nest at most {MAX_DEPTH} levels")
        ref = node.get("$ref")
        if ref is not None and not (isinstance(ref, str) and ref.startswith("#")):
            raise Invalid(f"{where}.$ref", "only local references (#/...) are allowed")
        for keyword in ("$dynamicRef", "$recursiveRef"):
            if keyword in node:
                raise Invalid(f"{where}.{keyword}", "is not supported; use $ref")
        if "$id" in node:
            raise Invalid(f"{where}.$id", "is not supported: a store schema is one document")
        if "default" in node:
            validation.value(node["default"], f"{where}.default")  # what a POST would store
        if where != "schema" and "$schema" in node:
            raise Invalid(f"{where}.$schema", "only the root may name the dialect")
        properties = node.get("properties")
        if isinstance(properties, dict):
            counted += len(properties)
            if counted > MAX_PROPERTIES:
                raise Invalid("schema", f"at most {MAX_PROPERTIES} properties in all")
            for name in properties:
                _property_name(name, f"{where}.properties")
    try:
        jsonschema_rs.meta.validate(raw)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
        path = getattr(exc, "instance_path", None) or []
        where = ".".join(["schema", *(str(p) for p in path)])
        raise Invalid(where, f"not valid JSON Schema 2020-12: {_first_line(str(exc))}") from None


def _property_name(name: str, where: str) -> None:
    """A property name an entity can hold (the rules of ``validation.key``)."""
    try:
        validation.key(name, where)
    except Invalid as exc:
        problem = "cannot be an entity field (no '$' start, '.', NUL or empty)"
        raise Invalid(exc.field, problem) from None


def _top_level_names(raw: dict[str, Any]) -> Iterator[str]:
    properties = raw.get("properties")
    if isinstance(properties, dict):
        yield from properties
    required = raw.get("required")
    if isinstance(required, list):
        yield from (name for name in required if isinstance(name, str))


def _subschemas(raw: Any) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Every object in the schema that is read as a schema, with its path and depth (no
    recursion: a schema's depth is bounded only by the body limit until checked here)."""
    stack: list[tuple[str, int, Any]] = [("schema", 0, raw)]
    while stack:
        where, depth, node = stack.pop()
        if isinstance(node, list):
            for index, child in enumerate(node):
                stack.append((f"{where}.{index}", depth + 1, child))
            continue
        if not isinstance(node, dict):
            continue
        yield where, depth, node
        if depth > MAX_DEPTH:
            continue
        for keyword, child in node.items():
            if keyword in _DATA_KEYWORDS:
                continue
            if keyword in _SCHEMA_MAPS and isinstance(child, dict):
                for name, sub in child.items():
                    stack.append((f"{where}.{keyword}.{name}", depth + 1, sub))
            elif isinstance(child, (dict, list)):
                stack.append((f"{where}.{keyword}", depth + 1, child))


def _read_only_paths(node: Any, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Paths of properties marked ``readOnly`` through nested ``properties`` (not through
    ``$ref``, arrays or combinators)."""
    properties = node.get("properties") if isinstance(node, dict) else None
    if not isinstance(properties, dict):
        return
    for name, sub in properties.items():
        if isinstance(sub, dict):
            if sub.get("readOnly") is True:
                yield (*prefix, name)
            else:
                yield from _read_only_paths(sub, (*prefix, name))


@dataclass(frozen=True)
class _Defaults:
    values: dict[str, Any]  # default values of this level's properties
    nested: dict[str, _Defaults]  # defaults inside object properties, applied when present


def _defaults(node: dict[str, Any]) -> _Defaults | None:
    properties = node.get("properties")
    if not isinstance(properties, dict):
        return None
    values: dict[str, Any] = {}
    nested: dict[str, _Defaults] = {}
    for name, sub in properties.items():
        if not isinstance(sub, dict):
            continue
        if "default" in sub:
            values[name] = sub["default"]
        inner = _defaults(sub)
        if inner is not None:
            nested[name] = inner
    return _Defaults(values, nested) if values or nested else None


def _fill(fields: dict[str, Any], defaults: _Defaults) -> dict[str, Any]:
    filled = dict(fields)
    for name, item in defaults.values.items():
        if name not in filled:
            filled[name] = orjson.loads(orjson.dumps(item))  # a copy per entity
    for name, inner in defaults.nested.items():
        child = filled.get(name)
        if isinstance(child, dict):
            filled[name] = _fill(child, inner)
    return filled


def _violation(error: jsonschema_rs.ValidationError) -> Violation:
    path = [str(p) for p in error.instance_path]
    kind = error.kind
    rule = kind.name
    schema_path = list(error.schema_path)
    if (
        rule == "falseSchema"
        and len(schema_path) >= 2
        and isinstance(schema_path[-1], str)
        and schema_path[-2] not in _SCHEMA_MAPS
    ):
        rule = schema_path[-1]  # e.g. additionalProperties: false, met in a nested object
    if rule == "required":
        missing = kind.as_dict().get("property")
        if isinstance(missing, str):
            path.append(missing)
    field = ".".join(path)
    return Violation(field, rule, _message(error))


def _message(error: jsonschema_rs.ValidationError) -> str:
    """The validator's message with any value in it cut to MAX_VALUE_CHARS."""
    message = error.message
    try:
        shown = orjson.dumps(error.instance).decode()
    except TypeError:
        shown = ""
    if len(shown) > MAX_VALUE_CHARS and shown in message:
        message = message.replace(shown, shown[:MAX_VALUE_CHARS] + "...")
    if len(message) > 3 * MAX_VALUE_CHARS:
        message = message[: 3 * MAX_VALUE_CHARS] + "..."
    return message


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "invalid"
    return line if len(line) <= 300 else line[:300] + "..."
