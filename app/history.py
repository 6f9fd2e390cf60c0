"""Entity history: one entry per change, newest first, kept ``HISTORY_RETENTION_DAYS``.

Entries come from a change stream over every store (so changes made by any instance, or
directly in the database, are all there), read by one recorder per deployment: the process
holding the ``history`` lease in ``_leases``. It renews the lease every ``RENEW_S`` and
stores with it the stream token up to which entries are written; a process that finds the
lease expired (its holder stopped or died) takes over from that token, so changes made while
no recorder ran are recorded too, as long as the database still holds them. Until its first
entries are written, a holder stores its stream's start as the token. Every process
tries for the lease, so there is always a recorder while any process runs. Each entry's id
derives from the change's own stream position: a change read twice (by a successor resuming
from the token) is stored once.

Who made a change is carried by the hidden ``_by`` field the API sets on every write it
makes; a change that did not set it (one made directly in the database) has ``by: null``.
A delete cannot carry it, so the deleting request records its author itself.

Recording runs in the background with a bounded queue, written in batches (one round trip for
what queued up meanwhile): under a flood of changes larger than the queue, entries are
dropped (and logged) rather than stalling the recorder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId, encode
from pymongo import DESCENDING, ReturnDocument
from pymongo.errors import BulkWriteError, DocumentTooLarge, DuplicateKeyError, PyMongoError

from app.acl import AUTHOR, HIDDEN
from app.clock import now
from app.realtime.changes import Change, ChangeSource
from app.storage import (
    DUPLICATE_KEY,
    HISTORY,
    LEASES,
    TOO_LARGE,
    Document,
    Storage,
    translated_async,
)

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
BATCH = 500
# Between reads of the stream (unless a read was busy: see ChangeSource). Read change by
# change, the recorder cost about as much CPU as the write itself; paced, one read brings
# what 50 ms of writes made, and its entries go in one insert.
PACE_S = 0.05
MAX_ENTRIES = 1000
LEASE = "history"
LEASE_S = 15.0  # a recorder that has not renewed for this long is taken over
RENEW_S = 5.0
READY_S = 10.0  # how long start() waits for this process's first claim and stream
_QUIET = frozenset({"updatedAt"})
_MOST_BYTES = 16 * 1024 * 1024 - 16 * 1024  # an entry larger than this is stored slimmed


def author(document: Document | None) -> str | None:
    """The user a ``_by`` value names (``<user id>.<nonce>``)."""
    stamp = document.get(AUTHOR) if document is not None else None
    return stamp.split(".", 1)[0] if isinstance(stamp, str) and stamp else None


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
        "rev": change.revision,
        "op": op,
        "at": datetime.fromtimestamp(change.ts / 1000, UTC),
        "by": by,
        "changes": changes,
    }


def _slim(entry: Document) -> Document:
    """An entry too large to store, without its values: which fields changed, not how."""
    return {**entry, "changes": {}, "omitted": sorted(entry["changes"])}


def _fitted(entry: Document) -> Document:
    return _slim(entry) if len(encode(entry)) > _MOST_BYTES else entry


def _key(change: Change) -> str:
    if change.op == "delete":  # an id is deleted once; the deleting request names its author
        return f"{change.store}:{change.id}:delete"
    return change.position.data


class History:
    def __init__(self, storage: Storage):
        self.storage = storage
        self.queue: asyncio.Queue[Change] = asyncio.Queue(QUEUE_LIMIT)
        self._writer: asyncio.Task[None] | None = None
        self._leader: asyncio.Task[None] | None = None
        self.dropped = 0
        self.me = secrets.token_hex(8)  # this process, as a lease holder
        self.recording = asyncio.Event()  # set while this process holds the lease
        self._claimed = asyncio.Event()  # the first claim has been tried
        self._written: Document | None = None  # the token up to which entries are written

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

    async def start(self) -> None:
        """Start writing, and trying for the recorder's lease; returns once the first try is
        over (and, when it won, the stream is open), or after READY_S."""
        self._writer = asyncio.create_task(self._write(), name="history-writer")
        self._leader = asyncio.create_task(self._lead(), name="history-lease")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._claimed.wait(), READY_S)

    async def stop(self) -> None:
        for task in (self._leader, self._writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # --- the recorder's lease --------------------------------------------------------------

    async def _lead(self) -> None:
        while True:
            try:
                held, token = await self._claim()
            except PyMongoError as exc:
                log.warning("history: could not claim the recorder lease: %r", exc)
                held, token = False, None
            if not held:
                self._claimed.set()
                await asyncio.sleep(RENEW_S)
                continue
            await self._follow(token)

    async def _follow(self, token: Document | None) -> None:
        """Record from ``token`` while the lease stays ours; hand it back when stopped."""
        source = ChangeSource(self.storage, self.record, resume_after=token, pace_s=PACE_S)
        source.start()
        self._written = token
        self.recording.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(source.ready.wait(), READY_S)
            if self._written is None and source.resume_after is not None:
                # No predecessor left a token: this stream's start is where a successor
                # resumes, even if this process stops before its first entry is written.
                self._written = source.resume_after
                with contextlib.suppress(PyMongoError):
                    await self._renew(LEASE_S)
            self._claimed.set()
            while True:
                await asyncio.sleep(RENEW_S)
                try:
                    if not await self._renew(LEASE_S):
                        log.warning("history: the recorder lease went to another process")
                        return
                except PyMongoError as exc:
                    log.warning("history: could not renew the recorder lease: %r", exc)
        finally:
            self.recording.clear()
            await source.stop()
            with contextlib.suppress(PyMongoError, asyncio.CancelledError):
                await asyncio.shield(self._renew(0))  # let a successor take over at once

    async def _claim(self) -> tuple[bool, Document | None]:
        """Take the lease if it is free, expired or already ours: (held, stored token)."""
        now = datetime.now(UTC)
        leases = self.storage.system(LEASES)
        try:
            lease = await leases.find_one_and_update(
                {"_id": LEASE, "$or": [{"holder": self.me}, {"until": {"$lt": now}}]},
                {"$set": {"holder": self.me, "until": now + timedelta(seconds=LEASE_S)}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # held by another process, and not expired
            return False, None
        token = lease.get("token") if lease is not None else None
        return True, token if isinstance(token, dict) else None

    async def _renew(self, seconds: float) -> bool:
        """Extend the lease by ``seconds`` (0 hands it back) with the written token; False
        when it is no longer ours."""
        fields: Document = {"until": datetime.now(UTC) + timedelta(seconds=seconds)}
        if self._written is not None:
            fields["token"] = self._written
        result = await self.storage.system(LEASES).update_one(
            {"_id": LEASE, "holder": self.me}, {"$set": fields}
        )
        return bool(result.matched_count)

    # --- writing ---------------------------------------------------------------------------

    async def _write(self) -> None:
        """Write what has queued up in batches: one database round trip for up to BATCH
        entries (what one paced read of the stream brought)."""
        while True:
            # A read's changes are all queued before this task runs again: one insert for them.
            changes = [await self.queue.get()]
            while len(changes) < BATCH and not self.queue.empty():
                changes.append(self.queue.get_nowait())
            entries = []
            for change in changes:
                try:
                    entries.append({"_id": _key(change), **entry_of(change)})
                except Exception as exc:  # one odd document loses its entry, not the others
                    log.warning("no history entry for %s %s: %r", change.store, change.id, exc)
            try:
                written = bool(entries) and await self._write_batch(entries)
            except Exception:  # one batch may be lost; the recorder must go on
                log.exception("history: %d entries not written", len(entries))
                written = False
            if written:
                # Written up to here: a successor may resume after it.
                self._written = {"_data": changes[-1].position.data}

    async def _write_batch(self, entries: list[Document], slimmed: bool = False) -> bool:
        """Insert the entries; one another process (or the deleting request) stored first is
        a duplicate key, which leaves it stored once, as wanted. A plain insert costs the
        database far less than an upsert. An entry over the database's document limit (a
        change of a document larger than the API accepts, written straight to the database)
        is stored without its values (``_slim``)."""
        try:
            await self.entries_collection.insert_many(entries, ordered=False)
        except DocumentTooLarge:  # the driver refused one before sending it
            if slimmed:
                log.warning("history: %d entries not written: one is too large", len(entries))
                return False
            # Those written before it come back as duplicates, and stay stored once.
            return await self._write_batch([_fitted(e) for e in entries], slimmed=True)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            large = [e for e in errors if e.get("code") == TOO_LARGE]
            others = [e for e in errors if e.get("code") not in (DUPLICATE_KEY, TOO_LARGE)]
            if large and not slimmed:
                again = [_slim(entries[e["index"]]) for e in large]
                if not await self._write_batch(again, slimmed=True):
                    return False
            else:
                others += large
            if others:  # the entries themselves may be huge: not into the log
                first = others[0]
                log.warning(
                    "history: %d entries not written (code %s: %.200s)",
                    len(others), first.get("code"), first.get("errmsg"),
                )  # fmt: skip
                return False
        except PyMongoError as exc:
            log.warning("history: %d entries not written: %.500r", len(entries), exc)
            return False
        return True

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
