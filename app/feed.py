"""``GET /:store/_changes``: the change feed integrations poll, from the database's own change
stream (so in commit order, each change once, deletes included, whichever instance or program
made them), with the realtime layer's meaning of who is told what.

A cursor is a position in that stream (its resume token) and the time it was handed out. The
database hands out a position only up to what has committed, so a poller never skips a change
that was still being written. Cursors handed out longer than ``CHANGES_RETENTION_DAYS`` ago
are refused with 410 ``RESUME_EXPIRED``; the database must keep its history (MongoDB's oplog)
at least that long.
"""

from __future__ import annotations

import time
from typing import Any

from bson.timestamp import Timestamp

from app import acl
from app.acl import Principal
from app.errors import Internal, Invalid, ResumeExpired
from app.filters import Where
from app.query import Only
from app.realtime.changes import STORE_EVENTS, Change, Position, ResumeTokens
from app.realtime.events import Rendered, operation
from app.storage import BatchTooLarge, Document, Storage, change_stream

MAX_LIMIT = 1000
_WAIT_MS = 50


def _at(moment: float) -> Timestamp:
    """A wall-clock time as a cursor's issue time: seconds, and milliseconds in ``inc``."""
    return Timestamp(max(1, int(moment)), int(moment % 1 * 1000))


def _now() -> Timestamp:
    return _at(time.time())


class Feed:
    def __init__(self, storage: Storage, retention_days: float, tokens: ResumeTokens):
        self.storage = storage
        self.tokens = tokens
        self.retention_s = retention_days * 86400

    def _oldest(self) -> Timestamp:
        return _at(time.time() - self.retention_s)

    async def read(
        self,
        store: str,
        user: Principal,
        since: str | None,
        limit: int,
        where: Where | None,
        only: Only | None,
    ) -> dict[str, Any]:
        pipeline = [*STORE_EVENTS, {"$match": {"ns.coll": store}}]
        resume: Document | None = None
        start: Timestamp | None = None
        last: Position | None = None
        if since is None:
            limit = 0  # the feed starts now: no changes, a cursor to poll from
        elif since == "0":
            start = Timestamp(max(1, int(time.time() - self.retention_s)), 0)
        else:
            try:
                last = self.tokens.read(since)
            except Invalid:
                raise Invalid("since", "is not a cursor of this feed (use next)") from None
            if last.time < self._oldest():
                raise ResumeExpired(
                    "The cursor is older than CHANGES_RETENTION_DAYS; reload and poll again"
                )
            resume = {"_data": last.data}

        def visible(document: Document | None) -> bool:
            if document is None or not acl.can_read(user, document):
                return False
            return where is None or where.matches(document)

        changes: list[dict[str, Any]] = []
        first = last
        for _ in range(2):  # again, in small batches, if a reply was too large
            try:
                async with change_stream(self.storage, pipeline, resume, _WAIT_MS, start) as stream:
                    while len(changes) < limit:
                        event = await stream.try_next()
                        if event is None:
                            break
                        change = Change.from_event(event)
                        if change is None:
                            continue
                        last = change.position
                        op = operation(change, visible, user.admin)
                        if op is not None:
                            changes.append(_entry(change, op, only, self.tokens))
                    token = stream.resume_token
                break
            except BatchTooLarge:
                changes.clear()
                last = first
        else:
            raise Internal("The change stream's replies are too large to read")
        if token is not None and isinstance(token.get("_data"), str):
            last = Position(_now(), token["_data"])
        if last is None:
            return {"changes": changes, "next": since}
        # The cursor carries when it was handed out: its age is what retention counts (a quiet
        # store's position can be old and still perfectly valid).
        return {"changes": changes, "next": self.tokens.make(Position(_now(), last.data))}


def _entry(change: Change, op: str, only: Only | None, tokens: ResumeTokens) -> dict[str, Any]:
    rendered = Rendered(change, tokens)
    entry: dict[str, Any] = {
        "op": op,
        "id": str(change.id),
        "rev": change.revision,
        "ts": change.ts,
    }
    if op in ("create", "update", "enter"):
        entry["entity"] = rendered.entity(only)
    return entry
