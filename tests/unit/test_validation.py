"""Checks on client input: store names, ids, keys, paths, and JSON values bound for MongoDB."""

from __future__ import annotations

import pytest
from bson import ObjectId

from app import validation
from app.errors import BadRequest, Invalid


def nested(depth: int) -> dict:
    """A document whose innermost value sits ``depth`` objects down."""
    root: dict = {}
    node = root
    for _ in range(depth - 1):
        node["x"] = {}
        node = node["x"]
    return root


@pytest.mark.parametrize("name", ["a", "Orders", "sales_2024", "x-y", "a" + "b" * 63])
def test_store_names_accepted(name):
    assert validation.store_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "1abc", "_users", "-a", "a b", "a.b", "a$b", "a/b", "é", "a" * 65, "auth", "a\x00"],
)
def test_store_names_refused(name):
    with pytest.raises(Invalid) as caught:
        validation.store_name(name)
    assert caught.value.field == "store"


def test_object_ids_are_lowercased():
    assert validation.object_id("65F0AAAAAAAAAAAAAAAAAAAA") == ObjectId("65f0aaaaaaaaaaaaaaaaaaaa")
    made = ObjectId()
    assert validation.object_id(str(made)) == made


@pytest.mark.parametrize(
    "raw", ["", "xyz", "65f0aaaaaaaaaaaaaaaaaaa", "65f0aaaaaaaaaaaaaaaaaaaaa", "g" * 24, None, 5]
)
def test_object_ids_refused_naming_the_field(raw):
    with pytest.raises(Invalid) as caught:
        validation.object_id(raw, "after")
    assert caught.value.field == "after"


def test_json_object():
    assert validation.json_object({"a": 1}) == {"a": 1}
    others: list[object] = [[], "x", 1, None, True]
    for other in others:
        with pytest.raises(BadRequest):
            validation.json_object(other)


@pytest.mark.parametrize("name", ["a", "_id", "with space", "ünï", "a$", "x-y"])
def test_keys_accepted(name):
    validation.key(name, "body")


@pytest.mark.parametrize(
    ("name", "where", "named"),
    [
        ("", "", "body"),
        ("", "doc", "doc"),
        ("$where", "", "$where"),
        ("$set", "a.b", "a.b.$set"),
        ("a.b", "", "a.b"),
        ("a\x00b", "", "a\\0b"),
    ],
)
def test_keys_refused_naming_where(name, where, named):
    with pytest.raises(Invalid) as caught:
        validation.key(name, where)
    assert caught.value.field == named


def test_paths_are_split_into_segments():
    assert validation.path("a") == ["a"]
    assert validation.path("address.city") == ["address", "city"]
    assert validation.path("a.0.b") == ["a", "0", "b"]


@pytest.mark.parametrize("raw", ["", ".", "a.", ".a", "a..b", "$a", "a.$b", "a.b\x00"])
def test_paths_refused(raw):
    with pytest.raises(Invalid):
        validation.path(raw)


def test_no_overlap_allows_siblings():
    validation.no_overlap(["a", "ab", "b.c", "b.d", "a_b"], "only")
    validation.no_overlap([], "only")


@pytest.mark.parametrize("paths", [["a", "a"], ["a", "a.b"], ["x.y.z", "x.y"], ["b", "a", "a.c"]])
def test_no_overlap_refuses_a_path_inside_another(paths):
    with pytest.raises(Invalid) as caught:
        validation.no_overlap(paths, "body")
    assert caught.value.field == "body"


@pytest.mark.parametrize(
    "item",
    [
        None,
        True,
        1.5,
        "text",
        2**63 - 1,
        -(2**63),
        [1, [2, [3]]],
        {"a": {"b": [{"c": 1}]}},
        nested(validation.MAX_DEPTH),
    ],
)
def test_values_accepted(item):
    validation.value(item, "")


@pytest.mark.parametrize(
    ("item", "named"),
    [
        (2**63, "body"),
        (-(2**63) - 1, "body"),
        ({"n": {"m": 2**64}}, "n.m"),
        ([1, 2**63], "body"),
        ({"a": {"$gt": 1}}, "a.$gt"),
        ({"a": [{"b.c": 1}]}, "a.b.c"),
        (nested(validation.MAX_DEPTH + 3), "x"),
    ],
)
def test_values_refused_naming_where(item, named):
    with pytest.raises(Invalid) as caught:
        validation.value(item, "")
    assert caught.value.field.startswith(named)


def test_deep_lists_count_towards_depth():
    deep: list = []
    node = deep
    for _ in range(validation.MAX_DEPTH + 2):
        node.append([])
        node = node[0]
    with pytest.raises(Invalid):
        validation.value(deep, "v")


def test_string_lists_drop_duplicates_keeping_order():
    assert validation.string_list([], "access") == []
    assert validation.string_list(["b", "*", "b", "a"], "access") == ["b", "*", "a"]
    assert validation.string_list(["x" * 256], "branch") == ["x" * 256]


@pytest.mark.parametrize(
    "item", ["a", None, {"a": 1}, [1], [""], ["a", None], [["a"]], ["x" * 257], ["a\x00"]]
)
def test_string_lists_refused_naming_the_field(item):
    with pytest.raises(Invalid) as caught:
        validation.string_list(item, "branch")
    assert caught.value.field == "branch"


def test_paths_have_a_segment_and_a_length_limit():
    assert len(validation.path(".".join(["a"] * validation.MAX_PATH_SEGMENTS))) == 64
    with pytest.raises(Invalid):
        validation.path(".".join(["a"] * (validation.MAX_PATH_SEGMENTS + 1)))
    with pytest.raises(Invalid):
        validation.path("a" * (validation.MAX_PATH_LENGTH + 1))


def wrapped(levels: int) -> object:
    """A scalar inside ``levels`` objects."""
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(("segments", "levels"), [(1, 63), (30, 34), (64, 0)])
def test_a_value_under_a_dotted_key_counts_the_key_as_depth(segments, levels):
    key = ".".join(["k"] * segments)
    validation.value_at(key.split("."), wrapped(levels), key)
    with pytest.raises(Invalid):
        validation.value_at(key.split("."), wrapped(levels + 1), key)


def test_string_lists_have_a_count_limit():
    assert len(validation.string_list([str(n) for n in range(1000)], "access")) == 1000
    with pytest.raises(Invalid):
        validation.string_list([str(n) for n in range(1001)], "access")
