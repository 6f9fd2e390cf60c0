"""Bounded work under load: which requests run now, which wait briefly, and which are shed.

Every API request takes a slot in one of three lanes before it runs: ``read`` (GET of one
resource), ``write`` (everything that changes state, sign-in included) and ``list`` (GET of a
whole store: lists and ``meta``, the expensive queries). Each lane has its own limit of
concurrent requests, so a flood of lists cannot take the slots of point reads and writes. A
request that finds its lane full waits at most ``ADMISSION_WAIT_MS`` for a slot, behind at
most as many others as the lane has slots; past that it is answered at once with 503
``UNAVAILABLE`` and ``Retry-After``, never queued without bound.

While it runs, every database operation of the request shares one deadline
(``DB_TIMEOUT_MS``): for the requests on one entity, the request's own; for the rest, the
driver's client-side timeout, which also sends ``maxTimeMS`` so the database stops the work.
A client that disconnects cancels its request's work.
Health checks and the Socket.IO endpoint are not admitted here: sockets stay connected and
pings answered however loaded the API is.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

import pymongo
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deadline import Deadline
from app.errors import APIError, DeadlineExceeded, RequestTimeout, TooLarge, Unavailable
from app.middleware import render, scope_request_id
from app.validation import SYSTEM_NAMES

log = logging.getLogger(__name__)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
SEND_GRACE_S = 1.0  # past its deadline, a request still sending is cut after this
BODY_WAIT_S = 30.0  # a request's body must be in within this of its headers (408 after)
BODIES_PER_WRITE = 8  # requests receiving their bodies at once, per write slot
WATCH_AFTER_S = 0.05
_READ_METHODS = frozenset({"GET", "HEAD"})
_POINT_WRITES = frozenset({"PATCH", "DELETE"})


@dataclass(frozen=True)
class Limits:
    """The lanes' sizes and the waits, from ``Settings.limits()`` (the defaults live there)."""

    reads: int
    writes: int
    lists: int
    wait_s: float
    db_timeout_s: float
    query_timeout_s: float = 15.0  # the list lane's deadline: lists, meta and filters
    retry_after_s: int = 1
    body_bytes: int = 16 * 1024 * 1024  # the largest body any route takes (413 past it)


class Lane:
    """A bounded share of the concurrent work: ``limit`` running, as many waiting. A slot
    that is free is taken without awaiting anything (``try_enter``); a request that has to
    wait is handed its slot by the one leaving, first come first served."""

    def __init__(self, name: str, limit: int):
        self.name = name
        self.limit = limit
        self.running = 0
        self.waiting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.shed = 0

    def try_enter(self) -> bool:
        """Take a free slot at once; False when there is none (or others wait for one)."""
        if self.running < self.limit and not self._waiters:
            self.running += 1
            return True
        return False

    async def enter(self, wait_s: float) -> bool:
        """Take a slot, waiting at most ``wait_s``; False when the lane is full."""
        if self.try_enter():
            return True
        if self.waiting >= self.limit:
            self.shed += 1
            return False
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(handed)
        self.waiting += 1
        try:
            async with asyncio.timeout(wait_s):
                await handed
        except BaseException as exc:
            if handed.done() and not handed.cancelled():
                self.leave()  # a slot came just as the wait ended: pass it on
            else:
                handed.cancel()
            if isinstance(exc, TimeoutError):
                self.shed += 1
                return False
            raise
        finally:
            self.waiting -= 1
        return True  # ``running`` already counts the slot handed over

    def leave(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to the longest waiting
                return
        self.running -= 1


def classify(method: str, path: str) -> tuple[str | None, bool]:
    """The request's lane (None for what is never shed: health, sockets), and whether it is
    a point request: one entity's GET, PATCH or DELETE by id, or a POST of one entity to its
    store. Each of those is a few database operations by an indexed key, bounded work for
    the database, so the request's own deadline bounds it (see ``_run``)."""
    if not path.startswith("/api/"):
        return None, False
    parts = path.rstrip("/").split("/")  # ["", "api", "v1", store, ...]
    store = parts[3] if len(parts) > 3 and parts[2] == "v1" else ""
    of_store = bool(store) and not store.startswith("_") and store not in SYSTEM_NAMES
    if method not in _READ_METHODS:
        if len(parts) == 4:
            return "write", of_store and method == "POST"
        entity = len(parts) == 5 and of_store and not parts[4].startswith("_")
        return "write", entity and method in _POINT_WRITES
    if len(parts) == 4 and not store.startswith("_") and store not in SYSTEM_NAMES:
        return "list", False
    if len(parts) == 5 and parts[4] == "_changes":
        return "list", False  # a change-feed poll reads the stream like a list reads the store
    return "read", len(parts) == 5 and of_store and not parts[4].startswith("_")


class Admission:
    """ASGI middleware: admits each API request to its lane, bounds its database time, and
    cancels it when its client goes away."""

    def __init__(self, app: ASGIApp, limits: Limits):
        self.app = app
        self.limits = limits
        self.lanes = {
            "read": Lane("read", self.limits.reads),
            "write": Lane("write", self.limits.writes),
            "list": Lane("list", self.limits.lists),
        }
        self.bodies = Lane("body", self.limits.writes * BODIES_PER_WRITE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name, point = (
            classify(scope.get("method", ""), scope.get("path", ""))
            if scope["type"] == "http"
            else (None, False)
        )
        if name is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] in _BODY_METHODS:
            received = await self._receive_body(scope, receive, send)
            if received is None:
                return  # answered
            receive = received
        lane = self.lanes[name]
        if not lane.try_enter() and not await lane.enter(self.limits.wait_s):
            error = Unavailable(
                f"The server is busy ({name} requests); try again shortly",
                retry_after=self.limits.retry_after_s,
            )
            await render(error, scope_request_id(scope))(scope, receive, send)
            return
        deadline = self.limits.query_timeout_s if name == "list" else self.limits.db_timeout_s
        services = getattr(scope["app"].state, "services", None) if "app" in scope else None
        if services is not None:
            deadline = services.storage.request_timeout(deadline)
        try:
            await _run(self.app, scope, receive, send, deadline, point)
        finally:
            lane.leave()

    async def _receive_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """The request's body, read before the request takes a slot in its lane; then given
        to the app as it came. A client that sends its body slowly, or never, held a write
        slot while the app waited for it: 40 such connections, without signing in, kept
        every write of every user at 503. Now it holds a place among the bodies on their way
        (``BODIES_PER_WRITE`` per write slot; 503 past them) for at most ``BODY_WAIT_S``
        (then 408). What is kept is what the client sent, at most ``body_bytes`` (413)."""
        rid = scope_request_id(scope)
        for header, value in scope["headers"]:
            if (
                header == b"content-length"
                and value.isdigit()
                and int(value) > self.limits.body_bytes
            ):
                # Refused by the app at once, before it reads anything.
                return receive
        if not self.bodies.try_enter():
            error = Unavailable(
                "The server is receiving too many request bodies; try again shortly",
                retry_after=self.limits.retry_after_s,
            )
            await render(error, rid)(scope, receive, send)
            return None
        messages: deque[Message] = deque()
        size = 0
        failed: APIError | None = None
        try:
            async with asyncio.timeout(BODY_WAIT_S):
                while True:
                    message = await receive()
                    messages.append(message)
                    if message["type"] != "http.request":
                        break  # the client went away: the app sees that as it would have
                    size += len(message.get("body", b""))
                    if size > self.limits.body_bytes:
                        failed = TooLarge(f"The body is larger than {self.limits.body_bytes} bytes")
                        break
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            failed = RequestTimeout(f"The request body did not arrive within {BODY_WAIT_S:g} s")
        finally:
            self.bodies.leave()
        if failed is not None:
            await render(failed, rid)(scope, receive, send)
            return None

        async def replayed() -> Message:
            return messages.popleft() if messages else await receive()

        return replayed


async def _run(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, deadline_s: float, point: bool
) -> None:
    """Run ``app`` for one request under its deadline; if the client disconnects before the
    response is done, the request's task is cancelled (its database calls with it) and
    nothing more is sent.

    A point request (one entity's GET, PATCH or DELETE, or a POST of one entity: a few
    operations by an indexed key, each bounded work for the database) has the request's own
    deadline: the task is cancelled when it passes, and the driver drops the connection it
    was using. A write may then still land, as it may when the driver's timeout ends it
    after the database took it; either way the answer is the same 503. Every other request
    runs under the driver's client-side timeout, which also sends ``maxTimeMS`` so the
    database stops the work, and costs about 20 µs of CPU per database call (measured
    in-process): contextvars, a timer per call and ``maxTimeMS`` in every command."""
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - an ASGI server runs every request in a task
        raise RuntimeError("a request outside a task")
    state = _Watch(receive, task, bodyless=scope.get("method", "") not in _BODY_METHODS)
    try:
        if point:
            async with Deadline(deadline_s):
                await _watched(app, scope, send, state)
        else:
            # The driver's timeout ends database work; this one ends a request that has done
            # its database work but is still sending to a client that does not read (six
            # such lists held every list slot for as long as their sockets stayed open).
            with pymongo.timeout(deadline_s):
                async with Deadline(deadline_s + SEND_GRACE_S):
                    await _watched(app, scope, send, state)
    except TimeoutError:
        if state.started:  # the deadline passed while a slow client was taking the response
            log.info("%s %s: deadline passed while sending", scope["method"], scope["path"])
            return
        await render(DeadlineExceeded(), scope_request_id(scope))(scope, receive, send)


async def _watched(app: ASGIApp, scope: Scope, send: Send, state: _Watch) -> None:
    async def send_tracking(message: Message) -> None:
        state.started = True
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            state.finished = True
        await send(message)

    try:
        await app(scope, state.receive, send_tracking)
    except asyncio.CancelledError:
        if not state.cancelled_by_us:
            raise
        state.task.uncancel()
        log.info("%s %s: client went away; its work was cancelled", scope["method"], scope["path"])
    finally:
        state.stop()


class _Watch:
    """Reads the request's messages for the app and, once its body is in, waits for the
    client to disconnect. A body is never read ahead of the app (no unbounded buffering)."""

    def __init__(self, receive: Receive, task: asyncio.Task[object], bodyless: bool):
        self._receive = receive
        self.task = task
        self._first: Message | None = None  # a bodyless request's one http.request message
        # Made when the watch starts (most requests end before it would).
        self._first_seen: asyncio.Event | None = None
        self._gone: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._handed_first = not bodyless
        self.started = False  # a response message has been sent
        self.finished = False
        self.cancelled_by_us = False
        self._timer: asyncio.TimerHandle | None = None
        if bodyless:
            # Most requests are done long before a disconnect could matter: the watch (a task)
            # starts only for those still running after WATCH_AFTER_S.
            self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        self._timer = None
        if self._watcher is None and not self.finished:
            self._first_seen = asyncio.Event()
            self._gone = asyncio.Event()
            self._watcher = asyncio.create_task(
                self._watch(self._first_seen, self._gone), name="disconnect-watch"
            )

    async def _watch(self, first_seen: asyncio.Event, gone: asyncio.Event) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                gone.set()
                first_seen.set()
                if not self.finished:
                    self.cancelled_by_us = True
                    self.task.cancel()
                return
            if self._first is None and not self._handed_first:
                self._first = message
                first_seen.set()
            # Body chunks sent with a GET or DELETE are dropped: no handler reads them.

    async def receive(self) -> Message:
        if self._timer is not None:  # the app reads before the watch began: begin it now
            self._timer.cancel()
            self._start()
        if self._watcher is None or self._first_seen is None or self._gone is None:
            # A request with a body, still being read by the app (or one already finished).
            message = await self._receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                # The whole body is in: from now on, watch for the client, once the request
                # has run for WATCH_AFTER_S (most are done by then; a watch is a task).
                self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)
            return message
        if not self._handed_first:
            self._handed_first = True
            await self._first_seen.wait()
            if self._first is not None:
                return self._first
        await self._gone.wait()
        return {"type": "http.disconnect"}

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
