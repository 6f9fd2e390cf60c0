"""Entity history: one entry per change, newest first, kept ``HISTORY_RETENTION_DAYS``.

Entries come from the change stream every server process already follows (so changes made by
any instance, or directly in the database, are all there), and each is written under an id
derived from the change's own stream position: however many processes record it, it is
stored once. Who made a change is carried by the hidden ``_by`` field the API sets on every
write it makes; a change that did not set it (one made directly in the database) has
``by: null``. A delete cannot carry it, so the deleting request records its author itself.

Recording runs in the background with a bounded queue: under a flood of changes larger than
it, entries are dropped (and logged) rather than stalling realtime delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError, PyMongoError

from app.acl import AUTHOR, HIDDEN
from app.clock import now
from app.realtime.changes import Change
from app.storage import HISTORY, Document, Storage, translated_async

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
MAX_ENTRIES = 1000
_QUIET = frozenset({"updatedAt"})


def author(document: Document | None) -> str | None:
    """The user a ``_by`` value names (``<user id>.<nonce>``)."""
    stamp = document.get(AUTHOR) if document is not None else None
    return stamp.split(".", 1)[0] if isinstance(stamp, str) and stamp else None


def _revision(document: Document | None) -> int:
    found = document.get("_rev") if document is not None else None
    return found if isinstance(found, int) and not isinstance(found, bool) else 0


def _visible(document: Document | None) -> dict[str, Any]:
    return {k: v for k, v in (document or {}).items() if k not in HIDDEN and k not in _QUIET}


def entry_of(change: Change) -> Document:
    before, after = _visible(change.before), _visible(change.after)
    if change.op == "insert":
        changes = {k: {"from": None, "to": v} for k, v in after.items() if k != "_id"}
        op, by = "create", author(change.after)
    elif change.op == "delete":
        changes, op, by = {}, "delete", None
    else:
        changes = {
            k: {"from": before.get(k), "to": after.get(k)}
            for k in sorted(set(before) | set(after))
            if before.get(k) != after.get(k)
        }
        op = "update"
        # Only a write that set a new _by was made through the API.
        stamp_changed = (change.after or {}).get(AUTHOR) != (change.before or {}).get(AUTHOR)
        by = author(change.after) if stamp_changed or change.before is None else None
    return {
        "store": change.store,
        "entity": change.id,
        "rev": _revision(change.after if change.after is not None else change.before),
        "op": op,
        "at": datetime.fromtimestamp(change.ts / 1000, UTC),
        "by": by,
        "changes": changes,
    }


def _key(change: Change) -> str:
    if change.op == "delete":  # an id is deleted once; the deleting request names its author
        return f"{change.store}:{change.id}:delete"
    return change.position.data


class History:
    def __init__(self, storage: Storage):
        self.storage = storage
        self.queue: asyncio.Queue[Change] = asyncio.Queue(QUEUE_LIMIT)
        self._writer: asyncio.Task[None] | None = None
        self.dropped = 0

    @property
    def entries_collection(self) -> Any:
        return self.storage.system(HISTORY)

    def record(self, change: Change) -> None:
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning(
                "history is %d changes behind; dropped one of %s", QUEUE_LIMIT, change.store
            )

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write(), name="history-writer")

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def _write(self) -> None:
        while True:
            change = await self.queue.get()
            try:
                await self._store(_key(change), entry_of(change))
            except Exception as exc:  # one entry lost is logged; the others go on
                log.warning("could not record history of %s %s: %r", change.store, change.id, exc)

    async def _store(self, key: str, entry: Document, by: str | None = None) -> None:
        update: Document = {"$setOnInsert": entry}
        if by is not None:
            update = {
                "$set": {"by": by},
                "$setOnInsert": {k: v for k, v in entry.items() if k != "by"},
            }
        for _ in range(2):  # two recorders racing to insert: the loser updates
            try:
                await self.entries_collection.update_one({"_id": key}, update, upsert=True)
                return
            except DuplicateKeyError:
                continue

    async def deleted(self, store: str, entity_id: ObjectId, rev: int, by: str) -> None:
        """The deleting request's own record of who deleted ``entity_id``."""
        entry = {"store": store, "entity": entity_id, "rev": rev, "op": "delete",
                 "at": now(), "changes": {}}  # fmt: skip
        try:
            await self._store(f"{store}:{entity_id}:delete", entry, by)
        except PyMongoError as exc:
            log.warning("could not record who deleted %s %s: %r", store, entity_id, exc)

    async def entries(self, store: str, entity_id: ObjectId) -> list[Document]:
        async with translated_async():
            found: list[Document] = (
                await self.entries_collection.find(
                    {"store": store, "entity": entity_id}, {"_id": 0, "store": 0, "entity": 0}
                )
                .sort([("at", DESCENDING), ("rev", DESCENDING)])
                .limit(MAX_ENTRIES)
                .to_list()
            )
        return found
