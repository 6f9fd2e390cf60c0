"""The change source: a MongoDB change stream over the database's stores, turned into
``Change`` records and handed to a sink in order.

A write made through any server instance, or directly in the database, reaches every
instance this way. If the stream fails (the database restarts, a network blip) it is
reopened from the last resume token, so nothing is lost in between.

A source may follow only some stores (``stores``: the hub's, the stores its sockets watch),
so that the database, not the process, drops the changes nobody here listens to. When that
set grows, ``refresh`` reopens the stream with the new filter from the token it had reached
at that moment; whatever the old stream was reading meanwhile is dropped unread, and the new
one reads it again, so there is no gap and no duplicate for the stores followed before. For a
store just added, the new stream may start a little before the moment it was added (the old
stream was waiting on the database): which of those changes a new subscriber is owed is the
hub's to decide (``Subscription.after``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from bson.timestamp import Timestamp

from app.acl import revision_of
from app.errors import Invalid, ResumeExpired
from app.seal import SEAL_BYTES, Seal
from app.storage import Document, Storage, change_stream
from app.validation import digits

log = logging.getLogger(__name__)

STORE_OPERATIONS = ["insert", "update", "replace", "delete"]
# Store collections only: system collections start with "_".
STORE_EVENTS: list[Document] = [
    {"$match": {"operationType": {"$in": STORE_OPERATIONS}, "ns.coll": {"$regex": "^[A-Za-z]"}}}
]
IDLE_PAUSE_S = 0.5  # between two reads of a stream that follows no store
EMPTY_PAUSE_S = 0.01  # after a read that brought nothing (a paced source waits its pace)
# A paced source asks for this many changes per read, and reads on at once after a read that
# brought at least BUSY_READ: pacing spares the database reads when changes are few, and must
# never cap how many a second the source can follow. (The embedded database answers a read
# with at most about 200 changes whatever the batch size; MongoDB with up to 16 MiB of them.)
PACED_BATCH = 1000
BUSY_READ = 100
# time.increment.data (the shape handed out before tokens were sealed), then the seal in hex
_POSITION = r"([0-9a-f]{1,8})\.([0-9a-f]{1,8})\.([0-9A-Fa-f]{2,4096})"
_UNSEALED = re.compile(_POSITION)
_TOKEN = re.compile(_POSITION + rf"\.([0-9a-f]{{{2 * SEAL_BYTES}}})")


@dataclass(frozen=True)
class Position:
    """Where a change sits in the database's history: its cluster time and stream token."""

    time: Timestamp
    data: str


class ResumeTokens:
    """The opaque resume tokens handed to clients (events' ``resume``, the change feed's
    ``next``): a position sealed with a key derived from the deployment's secret, so every
    instance reads every other's, and a token the server did not hand out is refused at once.

    A client could otherwise resume from a position it made up: one past the marker that ends
    a replay held a replay slot, and the database's change stream, until the request's
    deadline, waiting for a marker it could never reach."""

    def __init__(self, secret: str):
        self._seal = Seal(secret, "resume-token")

    def make(self, position: Position) -> str:
        body = f"{position.time.time:x}.{position.time.inc:x}.{position.data}"
        return f"{body}.{self._seal.of(body.encode()).hex()}"

    def read(self, token: Any) -> Position:
        """The position a token names; Invalid for anything this deployment did not issue,
        and ResumeExpired for a token of the shape handed out before tokens were sealed, so
        that a client kept since then reloads, as it would after any expired token."""
        match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
        body = token[: match.start(4) - 1] if match else ""
        if not match or not self._seal.matches(body.encode(), bytes.fromhex(match[4])):
            if isinstance(token, str) and _UNSEALED.fullmatch(token):
                raise ResumeExpired(
                    "The resume token was handed out before this server version; reload by "
                    "REST and subscribe (or poll) again"
                )
            raise Invalid("resume", "not a valid resume token")
        return Position(Timestamp(int(match[1], 16), int(match[2], 16)), match[3])


@dataclass(frozen=True)
class Change:
    op: str  # insert, update or delete
    store: str
    id: Any
    before: Document | None
    after: Document | None
    ts: int
    position: Position

    @property
    def revision(self) -> int:
        """The revision the change left (the last one, for a delete)."""
        return revision_of(self.after if self.after is not None else self.before)

    @classmethod
    def from_event(cls, event: Document) -> Change | None:
        kind = event.get("operationType")
        before = event.get("fullDocumentBeforeChange")
        after: Document | None
        if kind == "insert" or kind == "replace":
            after = event.get("fullDocument")
        elif kind == "update":
            if before is not None:
                after = apply_update(before, event.get("updateDescription") or {})
            else:  # no pre-image kept: the current document is the best we have
                after = event.get("fullDocument")
        elif kind == "delete":
            after = None
        else:
            return None
        wall = event.get("wallTime")
        cluster_time: Timestamp = event["clusterTime"]
        ts = int(wall) if wall is not None else cluster_time.time * 1000
        return cls(
            op="insert" if kind == "insert" else "delete" if kind == "delete" else "update",
            store=event["ns"]["coll"],
            id=event["documentKey"]["_id"],
            before=before,
            after=after,
            ts=ts,
            position=Position(cluster_time, event["_id"]["_data"]),
        )


def apply_update(before: Document, description: Document) -> Document:
    """The document after an update, from its pre-image and the event's update description
    (exact, unlike a later lookup that may already show newer writes).

    Copy on write: only the objects and arrays along the changed paths are copied, so the
    pre-image stays as it was and the cost does not grow with the document's depth."""
    after: Document = dict(before)
    copied: set[int] = {id(after)}
    for path, value in (description.get("updatedFields") or {}).items():
        _set_path(after, path.split("."), value, copied)
    for path in description.get("removedFields") or []:
        _remove_path(after, path.split("."), copied)
    for truncated in description.get("truncatedArrays") or []:
        segments = truncated["field"].split(".")
        parent = _writable_parent(after, segments, copied, create=False)
        target = _step(parent, segments[-1])
        if isinstance(target, list):
            target = list(target[: truncated["newSize"]])
            _put(parent, segments[-1], target)
    return after


def _step(container: Any, segment: str) -> Any:
    if isinstance(container, dict):
        return container.get(segment)
    if isinstance(container, list) and digits(segment) and int(segment) < len(container):
        return container[int(segment)]
    return None


def _put(container: Any, segment: str, value: Any) -> None:
    if isinstance(container, dict):
        container[segment] = value
    elif isinstance(container, list) and digits(segment):
        index = int(segment)
        container.extend([None] * (index + 1 - len(container)))
        container[index] = value


def _writable_parent(document: Any, segments: list[str], copied: set[int], *, create: bool) -> Any:
    """The container that holds ``segments[-1]``, with every container on the way copied once
    (so the pre-image is never changed); None when the path does not lead anywhere."""
    node = document
    for segment in segments[:-1]:
        child = _step(node, segment)
        if child is None:
            if not create or not isinstance(node, dict):
                return None
            child = {}
        elif not isinstance(child, (dict, list)):
            return None
        elif id(child) not in copied:
            child = dict(child) if isinstance(child, dict) else list(child)
        copied.add(id(child))
        _put(node, segment, child)
        node = child
    return node


def _set_path(document: Any, segments: list[str], value: Any, copied: set[int]) -> None:
    parent = _writable_parent(document, segments, copied, create=True)
    if parent is not None:
        _put(parent, segments[-1], value)


def _remove_path(document: Any, segments: list[str], copied: set[int]) -> None:
    parent = _writable_parent(document, segments, copied, create=False)
    last = segments[-1]
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list) and digits(last) and int(last) < len(parent):
        parent[int(last)] = None


class ChangeSource:
    """Follows the database's change stream and calls ``sink`` with each store change: of
    every store, or of those ``stores()`` names."""

    def __init__(
        self,
        storage: Storage,
        sink: Callable[[Change], None],
        stores: Callable[[], Collection[str]] | None = None,
        resume_after: Document | None = None,
        pace_s: float = 0.0,
    ):
        self.storage = storage
        # Once the changes read are handed over, wait this long before reading again, so that
        # one read brings what came meanwhile (for a reader that can wait: history), unless
        # the read was a busy one (BUSY_READ).
        self.pace_s = pace_s
        self.sink = sink
        self.resume_after = resume_after
        self.ready = asyncio.Event()
        self._stores = stores
        self.watching: frozenset[str] | None = None  # what the open stream follows; None: all
        self._generation = 0  # bumped by refresh: a stream of an older one stops reading
        self._task: asyncio.Task[None] | None = None
        self._restarting: asyncio.Task[None] | None = None
        self._preparing: set[asyncio.Task[None]] = set()
        # Reopening is asked for from within requests: the stream must not inherit their
        # context (a request's deadline would end the stream with it), only its maker's.
        self._context = contextvars.copy_context()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="change-source")

    async def stop(self) -> None:
        tasks = [*self._preparing, *(t for t in (self._task, self._restarting) if t)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def refresh(self) -> None:
        """``stores()`` may have grown: reopen the stream to follow them all, from the token
        reached now (call it as soon as a store is added, before anything awaits)."""
        if self._stores is None or self._task is None:
            return
        if self.watching is not None and self.watching.issuperset(self._stores()):
            return
        self._generation += 1
        if self._restarting is None:
            self._restarting = asyncio.create_task(
                self._restart(), name="change-source-reopen", context=self._context.copy()
            )

    async def _restart(self) -> None:
        try:
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = asyncio.create_task(
                self._run(), name="change-source", context=self._context.copy()
            )
        finally:
            self._restarting = None

    def _pipeline(self) -> list[Document]:
        if self._stores is None:
            return STORE_EVENTS
        following = frozenset(self._stores())
        self.watching = following
        return [*STORE_EVENTS, {"$match": {"ns.coll": {"$in": sorted(following)}}}]

    def _prepare(self, store: str) -> None:
        """A store written outside the API gets its indexes and pre-images as soon as a change
        in it is seen, so its later deletes can be checked against the entity as it was."""
        if self.storage.is_prepared(store) or any(t.get_name() == store for t in self._preparing):
            return
        task = asyncio.create_task(self._prepare_quietly(store), name=store)
        self._preparing.add(task)
        task.add_done_callback(self._preparing.discard)

    async def _prepare_quietly(self, store: str) -> None:
        try:
            await self.storage.prepare_existing(store)
        except Exception as exc:
            log.warning("could not prepare store %s: %r", store, exc)

    def _deliver(self, event: Document) -> None:
        """Hand one event to the sink. Whatever one change holds, a failure here is logged and
        skipped: it never stops or reopens the stream for the changes after it."""
        try:
            change = Change.from_event(event)
            if change is None:
                return
            self._prepare(change.store)
            self.sink(change)
        except Exception:
            log.exception("could not route a change of %r", (event.get("ns") or {}).get("coll"))

    async def _run(self) -> None:
        delay = 0.1
        generation = self._generation
        while True:
            try:
                async with change_stream(
                    self.storage,
                    self._pipeline(),
                    self.resume_after,
                    max_await_ms=500,
                    batch_size=PACED_BATCH if self.pace_s else None,
                ) as stream:
                    # Where the stream starts, known before any change arrives.
                    self.resume_after = stream.resume_token or self.resume_after
                    self.ready.set()
                    delay = 0.1
                    read = 0  # changes handed over from the current read
                    while True:
                        event = await stream.try_next()
                        if generation != self._generation:
                            return  # refreshed: the new stream reads this again, filtered anew
                        self.resume_after = stream.resume_token or self.resume_after
                        if event is not None:
                            self._deliver(event)
                            read += 1
                            if self.pace_s and stream.drained():
                                if read < BUSY_READ:
                                    await asyncio.sleep(self.pace_s)
                                read = 0
                        elif self.watching is not None and not self.watching:
                            # Following no store: the stream only keeps its token fresh
                            # (a database may answer a wait early at every write elsewhere).
                            await asyncio.sleep(IDLE_PAUSE_S)
                        else:
                            # An empty answer: the wait ran out, or the database answered
                            # early at a write this stream filters out (the embedded one
                            # does at every write anywhere). Asking again at once cost a
                            # read per such write; this bounds those reads' rate.
                            await asyncio.sleep(self.pace_s or EMPTY_PAUSE_S)
            except asyncio.CancelledError:
                raise
            except ResumeExpired:
                log.error("change history lost while the stream was down; following from now")
                self.resume_after = None
            except Exception as exc:  # keep following whatever happened
                log.warning("change stream interrupted (%r); reopening in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
