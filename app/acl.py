"""Who may read and write an entity: the meaning we give the seed's four access fields.

An entity carries ``owner`` (a user id), ``group`` (a group id), ``access`` (user ids,
group ids or ``"*"``) and ``branch`` (branch ids). Read access is precomputed into a hidden
``_readers`` array of principal keys, kept beside the four fields and covered by a multikey
index, so the read rule is one indexed ``$in`` inside every query. Every path (REST,
websocket, admin) takes its filters from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

READERS = "_readers"
# The entity's change counter, bumped by every update the API makes; guards writes that
# depend on the whole entity (store definitions) and never leaves the server either.
REVISION = "_rev"
# Who made the last change through the API (``<user id>.<nonce>``, new on every write), for the
# entity's history; hidden like the others.
AUTHOR = "_by"
HIDDEN = frozenset({READERS, REVISION, AUTHOR})


def revision_of(document: Mapping[str, Any] | None) -> int:
    """An entity's revision: 1 when created, one more on every change the API makes (0 for
    an entity written into the database without one)."""
    found = document.get(REVISION) if document is not None else None
    return found if isinstance(found, int) and not isinstance(found, bool) else 0


ACCESS_FIELDS = ("owner", "group", "access", "branch")
EVERYONE = "*"


@dataclass(frozen=True)
class Principal:
    """A signed-in user, as the access rules see them."""

    user_id: str
    login: str
    name: str = ""
    groups: tuple[str, ...] = ()
    branches: tuple[str, ...] = ()
    admin: bool = False
    credential: str = field(default="", compare=False)

    @property
    def primary_group(self) -> str | None:
        return self.groups[0] if self.groups else None

    def reader_keys(self) -> list[str]:
        """The principal keys of ``_readers`` that grant this user read access."""
        keys = [f"u:{self.user_id}", f"a:{self.user_id}", f"a:{EVERYONE}"]
        for group in self.groups:
            keys += [f"g:{group}", f"a:{group}"]
        keys += [f"b:{branch}" for branch in self.branches]
        return keys


def readers_of(owner: Any, group: Any, access: Iterable[str], branch: Iterable[str]) -> list[str]:
    """The ``_readers`` array for an entity with these access fields."""
    keys: list[str] = []
    if owner:
        keys.append(f"u:{owner}")
    if group:
        keys.append(f"g:{group}")
    keys += [f"a:{item}" for item in access]
    keys += [f"b:{item}" for item in branch]
    return sorted(set(keys))


def readers_of_entity(entity: Mapping[str, Any]) -> list[str]:
    return readers_of(
        entity.get("owner"),
        entity.get("group"),
        entity.get("access") or [],
        entity.get("branch") or [],
    )


def read_filter(user: Principal) -> dict[str, Any]:
    """The MongoDB filter that selects what ``user`` may read."""
    if user.admin:
        return {}
    return {READERS: {"$in": user.reader_keys()}}


def write_filter(user: Principal) -> dict[str, Any]:
    """The filter that selects what ``user`` may change or delete: what they may read, and of
    that, what they own or what belongs to one of their groups."""
    if user.admin:
        return {}
    return {
        **read_filter(user),
        "$or": [{"owner": user.user_id}, {"group": {"$in": list(user.groups)}}],
    }


def access_filter(user: Principal) -> dict[str, Any]:
    """The filter that selects entities whose access fields ``user`` may change: owner only."""
    if user.admin:
        return {}
    return {"owner": user.user_id}


def can_read(user: Principal, entity: Mapping[str, Any]) -> bool:
    """The read rule on an entity already in hand (the change feed's events, never lists)."""
    if user.admin:
        return True
    # Exactly what the indexed read filter would match: no ``_readers``, no reader but admins.
    return not frozenset(user.reader_keys()).isdisjoint(readers_in(entity))


def can_write(user: Principal, entity: Mapping[str, Any]) -> bool:
    """``write_filter`` on an entity already in hand (fetched by its id)."""
    if user.admin:
        return True
    if not can_read(user, entity):
        return False
    return entity.get("owner") == user.user_id or (
        isinstance(entity.get("group"), str) and entity.get("group") in user.groups
    )


def readers_in(entity: Mapping[str, Any] | None) -> list[str]:
    """The stored ``_readers`` keys as ``$in`` sees them: an array's strings, or a lone
    string. (Whatever another program stored there never grants more than the query would.)"""
    readers = entity.get(READERS) if entity is not None else None
    if isinstance(readers, list):
        return [key for key in readers if isinstance(key, str)]
    if isinstance(readers, str):
        return [readers]
    return []


_KEY_FIELDS = {"u": "owner", "g": "group", "a": "access", "b": "branch"}


def explain(user: Principal, entity: Mapping[str, Any]) -> dict[str, Any]:
    """Whether ``user`` may read and change ``entity`` and which fields grant it, from the
    same rules ``can_read``/``can_write`` apply (the console shows this to admins)."""
    readable = can_read(user, entity)
    writable = can_write(user, entity)
    if user.admin:
        return {
            "read": True, "write": True, "changeAccess": True,
            "readVia": ["admin"], "writeVia": ["admin"],
        }  # fmt: skip
    shared = set(user.reader_keys()) & set(readers_in(entity))
    read_via = sorted({_KEY_FIELDS[key.split(":", 1)[0]] for key in shared})
    write_via = []
    if writable and entity.get("owner") == user.user_id:
        write_via.append("owner")
    if writable and isinstance(entity.get("group"), str) and entity.get("group") in user.groups:
        write_via.append("group")
    return {
        "read": readable,
        "write": writable,
        "changeAccess": readable and entity.get("owner") == user.user_id,
        "readVia": read_via,
        "writeVia": write_via,
    }
