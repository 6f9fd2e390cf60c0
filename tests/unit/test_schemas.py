"""Store schemas without a server: defaults, the PATCH simulation, messages, and what a
schema may hold."""

from __future__ import annotations

import pytest

from app.definitions import apply_changes
from app.errors import Invalid
from app.openapi import _pointed
from app.schemas import Schema

NESTED = {
    "type": "object",
    "properties": {
        "stage": {"default": "new"},
        "list": {"default": [1]},
        "contact": {
            "type": "object",
            "properties": {
                "country": {"default": "DE"},
                "deep": {"properties": {"x": {"default": 0}}},
            },
        },
    },
}


def test_defaults_fill_missing_values_at_the_top_and_in_present_objects():
    schema = Schema(NESTED)
    assert schema.with_defaults({}) == {"stage": "new", "list": [1]}
    filled = schema.with_defaults({"stage": "won", "contact": {"deep": {}}})
    assert filled == {"stage": "won", "list": [1], "contact": {"country": "DE", "deep": {"x": 0}}}
    # Each entity gets its own copy of a default, and the input is left as it was.
    given: dict = {}
    first, second = schema.with_defaults(given), schema.with_defaults(given)
    first["list"].append(2)
    assert second["list"] == [1] and given == {}


def test_apply_changes_follows_mongodb_set():
    stored = {"a": {"b": 1}, "list": [1, {"x": 1}], "text": "t"}
    assert apply_changes(stored, {"a.c": 2}) == {**stored, "a": {"b": 1, "c": 2}}
    assert apply_changes(stored, {"n.m.o": 1})["n"] == {"m": {"o": 1}}
    assert apply_changes(stored, {"list.1.x": 5})["list"] == [1, {"x": 5}]
    assert apply_changes(stored, {"list.3": 9})["list"] == [1, {"x": 1}, None, 9]
    assert stored["a"] == {"b": 1}  # not changed in place
    with pytest.raises(Invalid) as raised:
        apply_changes(stored, {"text.x": 1})
    assert raised.value.field == "text.x"


def test_messages_cut_long_values():
    schema = Schema({"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}})
    [violation] = schema.violations({"a": "y" * 10_000})
    assert violation.field == "a" and violation.rule == "maxLength"
    assert "y" * 101 not in violation.message and len(violation.message) <= 303


def test_required_names_the_missing_field_and_many_errors_are_bounded():
    schema = Schema(
        {
            "type": "object",
            "properties": {"o": {"type": "object", "required": ["p"]}},
            "additionalProperties": {"type": "integer"},
        }
    )
    assert [(v.field, v.rule) for v in schema.violations({"o": {}})] == [("o.p", "required")]
    many = schema.violations({f"k{i}": "x" for i in range(500)})
    assert len(many) == 100


def test_data_keywords_are_not_read_as_schemas():
    # A const or enum may hold any JSON, "$ref" keys included; it is data, never fetched.
    Schema({"type": "object", "properties": {"a": {"const": {"$ref": "https://x"}}}})
    Schema({"type": "object", "properties": {"a": {"enum": [{"$id": "y"}]}}})
    with pytest.raises(Invalid):
        Schema({"type": "object", "properties": {"a": {"items": {"$ref": "https://x"}}}})


def test_patterns_run_on_the_linear_time_engine():
    schema = Schema({"type": "object", "properties": {"a": {"pattern": "^(a+)+$"}}})
    assert schema.violations({"a": "a" * 50_000 + "b"})  # answers at once, no backtracking
    with pytest.raises(Invalid):
        Schema({"type": "object", "properties": {"a": {"pattern": "(a)\\1"}}})  # backreference


def test_openapi_references_point_into_the_component():
    raw = {"properties": {"a": {"$ref": "#/$defs/x"}, "b": {"const": {"$ref": "#/keep"}}}}
    assert _pointed(raw, "#/components/schemas/s") == {
        "properties": {
            "a": {"$ref": "#/components/schemas/s/$defs/x"},
            "b": {"const": {"$ref": "#/keep"}},
        }
    }
