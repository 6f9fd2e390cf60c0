"""What one change looks like to one subscriber: whether they hear of it (the ``op``), and
the event's JSON, encoded once per change and shared by all its subscribers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from app import jsonio
from app.acl import HIDDEN
from app.query import Only
from app.realtime.changes import Change, ResumeTokens

Document = dict[str, Any]


def operation(
    change: Change, may_read: Callable[[Document | None], bool], admin: bool
) -> str | None:
    """The event's ``op`` for a reader, or None when they are told nothing: ``create``,
    ``update`` and ``enter`` need read access after the change, ``delete`` and ``leave`` read
    access before it. ``may_read`` is the whole test (a subscription's filter included), so
    an entity that starts or stops matching a filter enters or leaves like one whose access
    changed."""
    could, can = may_read(change.before), may_read(change.after)
    if change.op == "delete" and change.before is None:
        # No pre-image (a collection made outside the API): only admins may be told.
        could = admin
    if change.op == "insert":
        return "create" if can else None
    if change.op == "delete":
        return "delete" if could else None
    if can:
        return "update" if could or change.before is None else "enter"
    return "leave" if could else None


def encode(rendered: Rendered, subscription: str, op: str, only: Only | None) -> str:
    """``{"subscription", "op", "store", "id", "rev", "ts", "resume", "entity"?}`` as JSON text; the
    entity (projected by ``only``) only for create, update and enter. All but the subscription
    id is encoded once per change, ``op`` and ``only``."""
    return '{"subscription":"' + subscription + '",' + rendered.tail(op, only)


class Rendered:
    """One change encoded once and shared by all its subscribers: the JSON of the fields every
    event carries, and of the entity per ``only``."""

    def __init__(self, change: Change, tokens: ResumeTokens):
        self.change = change
        self._tokens = tokens  # for the events' resume token (made once, when first needed)
        self._common: str | None = None
        self._plain: dict[str, Any] | None = None
        self._encoded: dict[Only | None, str] = {}
        self._tails: dict[tuple[str, Only | None], str] = {}
        # The op per reader (their reader keys, admin or not), for subscriptions without a
        # filter: most subscribers of a change share one.
        self.ops: dict[tuple[frozenset[str], bool], str | None] = {}

    def common(self) -> str:
        """The JSON of the fields every subscriber's event of this change carries."""
        if self._common is None:
            change, tokens = self.change, self._tokens
            # The revision the change left (the last one for a delete), for the next If-Match.
            self._common = (
                f'"store":{_text(change.store)},"id":{_text(str(change.id))},'
                f'"rev":{change.revision},"ts":{int(change.ts)},'
                f'"resume":{_text(tokens.make(change.position))}'
            )
        return self._common

    def tail(self, op: str, only: Only | None) -> str:
        """The event's JSON after its subscription id."""
        key = (op, only)
        tail = self._tails.get(key)
        if tail is None:
            tail = f'"op":"{op}",{self.common()}'
            if op in ("create", "update", "enter"):
                tail += f',"entity":{self.entity_json(only)}'
            tail = self._tails[key] = tail + "}"
        return tail

    def entity(self, only: Only | None) -> dict[str, Any]:
        """The entity as the subscriber sees it (BSON values not yet rendered)."""
        after = self._plain
        if after is None:
            after = self._plain = {
                k: v for k, v in (self.change.after or {}).items() if k not in HIDDEN
            }
        if only is None:
            return after
        return exclude(after, only.paths) if only.exclude else project(after, only.paths)

    def entity_json(self, only: Only | None) -> str:
        encoded = self._encoded.get(only)
        if encoded is None:
            encoded = self._encoded[only] = jsonio.dumps(self.entity(only)).decode()
        return encoded


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


def project(document: dict[str, Any], only: tuple[str, ...]) -> dict[str, Any]:
    """``document`` with ``_id`` and the ``only`` paths, as a MongoDB projection would."""
    shown: dict[str, Any] = {"_id": document.get("_id")}
    for path in only:
        _copy_path(document, shown, path.split("."))
    return shown


def _copy_path(source: Any, target: dict[str, Any], segments: list[str]) -> None:
    head, rest = segments[0], segments[1:]
    if not isinstance(source, dict) or head not in source:
        return
    value = source[head]
    if not rest:
        target[head] = value
    elif isinstance(value, dict):
        child = target.setdefault(head, {})
        if isinstance(child, dict):
            _copy_path(value, child, rest)
    elif isinstance(value, list):
        # Each object in the list keeps the path's fields; another path under the same list
        # adds to the same elements.
        existing = target.get(head)
        items: list[Any] = existing if isinstance(existing, list) else []
        for index, item in enumerate(x for x in value if isinstance(x, dict)):
            if index == len(items):
                items.append({})
            _copy_path(item, items[index], rest)
        target[head] = items


def exclude(document: dict[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """``document`` without the ``paths`` (``only=-a,-b.c``), as a MongoDB exclusion would
    leave it; ``document`` itself is not changed."""
    shown = dict(document)
    for path in paths:
        _drop_path(shown, path.split("."))
    return shown


def _drop_path(target: dict[str, Any], segments: list[str]) -> None:
    """Remove ``segments`` from ``target``, copying each object on the way (it may be shared
    with other subscribers' renderings)."""
    head, rest = segments[0], segments[1:]
    if head not in target:
        return
    if not rest:
        del target[head]
        return
    value = target[head]
    if isinstance(value, dict):
        target[head] = child = dict(value)
        _drop_path(child, rest)
    elif isinstance(value, list):
        items = [dict(item) if isinstance(item, dict) else item for item in value]
        for item in items:
            if isinstance(item, dict):
                _drop_path(item, rest)
        target[head] = items
