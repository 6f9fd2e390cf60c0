"""The access rules as data: reader keys, the ``_readers`` array, the filters and ``can_read``.

``matches`` below evaluates the filters the way MongoDB would for the operators they use, so
each rule is checked by what it selects, not only by its shape.
"""

from __future__ import annotations

from typing import Any

import pytest

from app import acl
from app.acl import Principal

ALICE = Principal("u-alice", "alice", groups=("sales", "ops"), branches=("north",))
BOB = Principal("u-bob", "bob", groups=("ops",))
LONER = Principal("u-loner", "loner")
ROOT = Principal("u-root", "root", admin=True)


def entity(
    owner: str = "u-alice",
    group: str | None = "sales",
    access: list[str] | None = None,
    branch: list[str] | None = None,
) -> dict[str, Any]:
    fields = {"owner": owner, "group": group, "access": access or [], "branch": branch or []}
    return {**fields, acl.READERS: acl.readers_of_entity(fields)}


def matches(query: dict[str, Any], document: dict[str, Any]) -> bool:
    """The subset of MongoDB's matching the ACL filters use: equality, ``$in``, ``$or``."""
    for name, condition in query.items():
        if name == "$or":
            if not any(matches(part, document) for part in condition):
                return False
            continue
        stored = document.get(name)
        candidates = stored if isinstance(stored, list) else [stored]
        if isinstance(condition, dict):
            (operator, wanted), *rest = condition.items()
            assert operator == "$in" and not rest, condition
            if not any(item in wanted for item in candidates):
                return False
        elif condition not in candidates:
            return False
    return True


def test_primary_group_is_the_first():
    assert ALICE.primary_group == "sales"
    assert LONER.primary_group is None


def test_reader_keys_name_the_user_their_groups_branches_and_everyone():
    assert sorted(ALICE.reader_keys()) == sorted(
        [
            "u:u-alice",
            "a:u-alice",
            "a:*",
            "g:sales",
            "a:sales",
            "g:ops",
            "a:ops",
            "b:north",
        ]
    )
    assert sorted(LONER.reader_keys()) == ["a:*", "a:u-loner", "u:u-loner"]


def test_readers_of_lists_each_grant_once_sorted():
    assert acl.readers_of("o", "g", ["u1", "*", "u1"], ["b1"]) == [
        "a:*",
        "a:u1",
        "b:b1",
        "g:g",
        "u:o",
    ]
    assert acl.readers_of(None, None, [], []) == []
    assert acl.readers_of("o", "", [], []) == ["u:o"]


def test_readers_of_entity_tolerates_missing_fields():
    assert acl.readers_of_entity({"owner": "o"}) == ["u:o"]
    assert acl.readers_of_entity({"owner": "o", "access": None, "branch": None}) == ["u:o"]


def test_admin_filters_select_everything():
    assert acl.read_filter(ROOT) == {}
    assert acl.write_filter(ROOT) == {}
    assert acl.access_filter(ROOT) == {}


def test_read_filter_is_one_in_over_readers():
    assert acl.read_filter(ALICE) == {"_readers": {"$in": ALICE.reader_keys()}}


@pytest.mark.parametrize(
    ("doc", "user", "readable"),
    [
        (entity(owner="u-bob", group="other"), BOB, True),  # owner
        (entity(owner="x", group="ops"), BOB, True),  # group member
        (entity(owner="x", group="other", access=["u-bob"]), BOB, True),  # named in access
        (entity(owner="x", group="other", access=["ops"]), BOB, True),  # group in access
        (entity(owner="x", group="other", access=["*"]), LONER, True),  # everyone
        (entity(owner="x", group="other", branch=["north"]), ALICE, True),  # branch
        (entity(owner="x", group="other", access=["u-alice"], branch=["south"]), BOB, False),
        (entity(owner="x", group="other", access=["sales"]), BOB, False),
        (entity(owner="x", group=None), LONER, False),
        (entity(owner="x", group="other", branch=["ops"]), BOB, False),  # a branch, not a group
        (entity(owner="x", group="other", access=["u-loner"]), LONER, True),
        (entity(owner="x", group="other"), ROOT, True),
    ],
)
def test_read_rule(doc, user, readable):
    assert acl.can_read(user, doc) is readable
    assert matches(acl.read_filter(user), doc) is readable


def test_can_read_without_readers_is_admin_only():
    bare = {"owner": "u-alice", "group": "sales", "access": ["*"]}
    assert acl.can_read(ALICE, bare) is False
    assert acl.can_read(ROOT, bare) is True


def test_write_filter_is_owner_or_group_member():
    assert matches(acl.write_filter(BOB), entity(owner="u-bob", group="x"))
    assert matches(acl.write_filter(BOB), entity(owner="x", group="ops"))
    for readable_only in (
        entity(owner="x", group="g", access=["u-bob"]),
        entity(owner="x", group="g", access=["ops", "*"]),
    ):
        assert acl.can_read(BOB, readable_only)
        assert not matches(acl.write_filter(BOB), readable_only)
    assert not matches(acl.write_filter(ALICE), entity(owner="x", group="g", branch=["north"]))
    assert not matches(acl.write_filter(LONER), entity(owner="x", group=None))


def test_access_filter_is_owner_only():
    assert acl.access_filter(BOB) == {"owner": "u-bob"}
    assert not matches(acl.access_filter(BOB), entity(owner="x", group="ops"))


def test_nothing_unreadable_is_writable():
    bare = {"owner": "u-bob", "group": "ops", "access": [], "branch": []}
    assert not matches(acl.write_filter(BOB), bare)
    assert matches(acl.write_filter(BOB), {**bare, acl.READERS: acl.readers_of_entity(bare)})
