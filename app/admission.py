"""Bounded work under load: which requests run now, which wait briefly, and which are shed.

Every API request takes a slot in one of three lanes before it runs: ``read`` (GET of one
resource), ``write`` (everything that changes state, sign-in included) and ``list`` (GET of a
whole store: lists and ``meta``, the expensive queries). Each lane has its own limit of
concurrent requests, so a flood of lists cannot take the slots of point reads and writes. A
request that finds its lane full waits at most ``ADMISSION_WAIT_MS`` for a slot, behind at
most as many others as the lane has slots; past that it is answered at once with 503
``UNAVAILABLE`` and ``Retry-After``, never queued without bound.

While it runs, every database operation of the request shares one deadline
(``DB_TIMEOUT_MS``, through the driver's client-side timeout, which also sends ``maxTimeMS``
so the database stops the work). A client that disconnects cancels its request's work.
Health checks and the Socket.IO endpoint are not admitted here: sockets stay connected and
pings answered however loaded the API is.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pymongo
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Unavailable
from app.middleware import render, scope_request_id

log = logging.getLogger(__name__)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
WATCH_AFTER_S = 0.05
_READ_METHODS = frozenset({"GET", "HEAD"})


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


class Lane:
    """A bounded share of the concurrent work: ``limit`` running, as many waiting."""

    def __init__(self, name: str, limit: int):
        self.name = name
        self.limit = limit
        self.running = 0
        self.waiting = 0
        self._semaphore = asyncio.Semaphore(limit)
        self.shed = 0

    async def enter(self, wait_s: float) -> bool:
        """Take a slot, waiting at most ``wait_s``; False when the lane is full."""
        if not self._semaphore.locked():
            await self._semaphore.acquire()  # free slot: returns without suspending
            self.running += 1
            return True
        if self.waiting >= self.limit:
            self.shed += 1
            return False
        self.waiting += 1
        try:
            async with asyncio.timeout(wait_s):
                await self._semaphore.acquire()
        except TimeoutError:
            self.shed += 1
            return False
        finally:
            self.waiting -= 1
        self.running += 1
        return True

    def leave(self) -> None:
        self.running -= 1
        self._semaphore.release()


def lane_name(method: str, path: str) -> str | None:
    """The lane a request runs in, or None for what is never shed (health, sockets)."""
    if not path.startswith("/api/"):
        return None
    if method not in _READ_METHODS:
        return "write"
    parts = path.rstrip("/").split("/")  # ["", "api", "v1", store, ...]
    if len(parts) == 4 and not parts[3].startswith("_") and parts[3] != "openapi.json":
        return "list"
    if len(parts) == 5 and parts[4] == "_changes":
        return "list"  # a change-feed poll reads the stream like a list reads the store
    return "read"


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = (
            lane_name(scope.get("method", ""), scope.get("path", ""))
            if scope["type"] == "http"
            else None
        )
        if name is None:
            await self.app(scope, receive, send)
            return
        lane = self.lanes[name]
        if not await lane.enter(self.limits.wait_s):
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
            with pymongo.timeout(deadline):
                await _cancelled_on_disconnect(self.app, scope, receive, send)
        finally:
            lane.leave()


async def _cancelled_on_disconnect(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> None:
    """Run ``app`` for one request; if the client disconnects before the response is done,
    the request's task is cancelled (its database calls with it) and nothing more is sent."""
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - always inside a task under an ASGI server
        await app(scope, receive, send)
        return
    state = _Watch(receive, task, bodyless=scope.get("method", "") not in _BODY_METHODS)

    async def send_tracking(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            state.finished = True
        await send(message)

    try:
        await app(scope, state.receive, send_tracking)
    except asyncio.CancelledError:
        if not state.cancelled_by_us:
            raise
        task.uncancel()
        log.info("%s %s: client went away; its work was cancelled", scope["method"], scope["path"])
    finally:
        state.stop()


class _Watch:
    """Reads the request's messages for the app and, once its body is in, waits for the
    client to disconnect. A body is never read ahead of the app (no unbounded buffering)."""

    def __init__(self, receive: Receive, task: asyncio.Task[object], bodyless: bool):
        self._receive = receive
        self._task = task
        self._first: Message | None = None  # a bodyless request's one http.request message
        # Made when the watch starts (most requests end before it would).
        self._first_seen: asyncio.Event | None = None
        self._gone: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._handed_first = not bodyless
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
                    self._task.cancel()
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
