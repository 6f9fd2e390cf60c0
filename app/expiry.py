"""Expiry of the system collections' records (history, audit, sessions, tokens, sign-in
failures, idempotency keys, fences): one rule each, applied by every process in small
deletes, rather than by TTL indexes.

Why not TTL indexes: the embedded database's TTL sweeper reads and decodes every record of
every collection that has one, once a minute, holding the database's lock the whole time. With
40,000 history entries that stopped every other operation for 0.8 s each minute, and the stop
grows with the history. Here each pass deletes by ranges of the rule's indexed time field,
a window at a time, sized so that one delete takes about ``BATCH`` records (a range query
costs that database in proportion to the records it spans, whatever its limit), with a pause
between deletes. MongoDB serves the same deletes from the same index.

A record is deleted at the earliest when its field is ``after_s`` in the past, and normally
within ``EVERY_S`` of that: readers that must not see an expired record check the time
themselves (sessions, tokens), as they had to with TTL indexes, which are as late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bson.codec_options import CodecOptions, DatetimeConversion
from pymongo import ASCENDING
from pymongo.errors import OperationFailure

from app.storage import (
    AUDIT,
    FENCE_TTL_S,
    FENCES,
    HISTORY,
    IDEMPOTENCY,
    LOGIN_FAILURES,
    SESSIONS,
    TOKENS,
    Document,
    Storage,
)

log = logging.getLogger(__name__)

EVERY_S = 60.0  # between passes (each process waits 0.5-1x this, so instances spread out)
BATCH = 200  # records one delete aims at
PAUSE_S = 0.02  # between two deletes of a pass: the database serves others meanwhile
MOST_PER_PASS = 100_000  # per rule; the rest waits for the next pass
FIRST_WINDOW_S = 1.0
SHORTEST_WINDOW_S = 0.001  # BSON dates count milliseconds
LONGEST_WINDOW_S = 366 * 86400.0
# After this long, a pass looks for the oldest record again rather than starting where the
# last one ended (a record stored late with an old time is then expired too).
REFLOOR_S = 3600.0
# No program of ours stores a date before this. Another program may store any date, even one
# Python's datetime cannot hold: those before it go at once, and windows start here.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CLAMPED: CodecOptions[Document] = CodecOptions(
    tz_aware=True, datetime_conversion=DatetimeConversion.DATETIME_CLAMP
)
_INDEX_CONFLICT = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict
_INDEX_NOT_FOUND = 27


@dataclass(frozen=True)
class Rule:
    """Records of ``collection`` are deleted once ``field`` (a date) is ``after_s`` past."""

    collection: str
    field: str
    after_s: float


def rules(history_retention_s: float) -> tuple[Rule, ...]:
    return (
        Rule(HISTORY, "at", history_retention_s),
        Rule(AUDIT, "at", 365 * 86400),
        Rule(SESSIONS, "expiresAt", 0),
        Rule(TOKENS, "expiresAt", 0),
        Rule(LOGIN_FAILURES, "at", 300),
        Rule(IDEMPOTENCY, "expiresAt", 0),
        Rule(FENCES, "at", FENCE_TTL_S),
    )


class Expiry:
    def __init__(
        self,
        storage: Storage,
        rules: tuple[Rule, ...],
        *,
        every_s: float | None = None,
        batch: int = BATCH,
        most_per_pass: int = MOST_PER_PASS,
    ):
        self.storage = storage
        self.rules = rules
        self.every_s = EVERY_S if every_s is None else every_s
        self.batch = batch
        self.most_per_pass = most_per_pass
        # Per rule: the time before which everything is deleted, when the oldest record was
        # last looked for, and the window that last held about a batch.
        self._floors: dict[Rule, datetime] = {}
        self._sought: dict[Rule, float] = {}
        self._windows: dict[Rule, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def prepare(self) -> None:
        """An ascending index on each rule's field. One left by an earlier version as a TTL
        index (same name, other options) is replaced: safe to run on every start, by several
        processes at once."""
        for rule in self.rules:
            collection = self.storage.system(rule.collection)
            try:
                await collection.create_index([(rule.field, ASCENDING)])
            except OperationFailure as exc:
                if exc.code not in _INDEX_CONFLICT:
                    raise
                log.info("replacing the TTL index on %s.%s", rule.collection, rule.field)
                try:
                    await collection.drop_index([(rule.field, ASCENDING)])
                except OperationFailure as dropped:  # another process got there first
                    if dropped.code != _INDEX_NOT_FOUND:
                        raise
                await collection.create_index([(rule.field, ASCENDING)])

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="expiry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s * random.uniform(0.5, 1.0))  # noqa: S311 - not a secret
            await self.sweep()

    async def sweep(self, moment: datetime | None = None) -> int:
        """One pass over every rule; the number of records deleted. A rule that fails (the
        database is away) is logged and left for the next pass; the others go on."""
        moment = moment or datetime.now(UTC)
        deleted = 0
        for rule in self.rules:
            try:
                count = await self._expire(rule, moment - timedelta(seconds=rule.after_s))
            except Exception as exc:
                log.warning("expiry of %s interrupted: %r", rule.collection, exc)
                continue
            if count:
                log.info("expired %d records of %s", count, rule.collection)
            deleted += count
        return deleted

    async def _expire(self, rule: Rule, cutoff: datetime) -> int:
        collection = self.storage.system(rule.collection)
        low = await self._floor(rule, cutoff)
        if low is None:  # nothing expired
            return 0
        window = self._windows.get(rule, FIRST_WINDOW_S)
        deleted = 0
        while low < cutoff and deleted < self.most_per_pass:
            high = min(low + timedelta(seconds=window), cutoff)
            result = await collection.delete_many({rule.field: {"$gte": low, "$lt": high}})
            deleted += result.deleted_count
            low = high
            self._floors[rule] = low  # everything before it is gone: the next pass starts there
            # Aim the next window at a batch, growing or shrinking at most fourfold per step
            # (records are not spread evenly in time).
            aim = window * self.batch / max(result.deleted_count, 1)
            window = min(max(aim, window / 4, SHORTEST_WINDOW_S), window * 4, LONGEST_WINDOW_S)
            await asyncio.sleep(PAUSE_S)
        self._windows[rule] = window
        return deleted

    async def _floor(self, rule: Rule, cutoff: datetime) -> datetime | None:
        """Where this pass starts (None: nothing has expired): where the last pass ended, or
        the oldest expired record's time (a query over every expired record, made on a
        process's first pass and then hourly)."""
        known, sought = self._floors.get(rule), self._sought.get(rule)
        if known is not None and sought is not None and _clock() - sought < REFLOOR_S:
            return known if known < cutoff else None
        self._sought[rule] = _clock()
        collection = self.storage.system(rule.collection)
        found: Document | None = await collection.with_options(codec_options=_CLAMPED).find_one(
            {rule.field: {"$lt": cutoff}}, {rule.field: 1, "_id": 0}, sort=[(rule.field, 1)]
        )
        value = found.get(rule.field) if found is not None else None
        if not isinstance(value, datetime):
            self._floors[rule] = cutoff
            return None
        if value < _EPOCH:
            await collection.delete_many({rule.field: {"$lt": _EPOCH}})
            return _EPOCH
        return value


def _clock() -> float:
    return asyncio.get_running_loop().time()
