"""One socket's outgoing events: written at once while the socket keeps up, queued (bounded)
behind the first write that has to wait.

A fan-out writes one frame to each of thousands of sockets. Almost always the write completes
without waiting: the socket's buffer has room, and neither the front's send lock nor the ASGI
server's flow control suspends. So the send coroutine is run right away, to its first
suspension, as Python 3.12's eager tasks do (this project supports 3.11): only a send that
really has to wait becomes a task, and events after it queue behind it in order. That spares
every delivery a queue, a wake-up and a task step, and every idle socket a sender task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

Write = Callable[[str], Coroutine[Any, Any, None]]
WriteNow = Callable[[str], bool]


def run_now(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coroutine`` until it finishes or first suspends; None if it finished, otherwise
    the task that carries it on from where it stopped."""
    try:
        waiting = coroutine.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_carry_on(coroutine, waiting))


async def _carry_on(coroutine: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Resume a coroutine that suspended on ``waiting`` (a future, or None for a bare yield),
    as the event loop's own task would have."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False
                # The outcome is read by the coroutine itself when it resumes.
                await asyncio.wait([waiting])
        except asyncio.CancelledError as cancelled:
            if waiting is not None:
                waiting.cancel()
            try:
                waiting = coroutine.throw(cancelled)
            except StopIteration:
                return
            continue
        try:
            waiting = coroutine.send(None)
        except StopIteration:
            return


class Outbox:
    """Events for one socket, in order. ``write`` must never raise for a socket that has gone
    (``Peer.emit_encoded`` guarantees that); ``overflow`` is called once more than ``limit``
    events wait. ``now``, when given, is tried first while nothing waits: it writes without
    any coroutine at all when it can (``Peer.emit_now``), and returns False when it cannot."""

    __slots__ = ("_backlog", "_drainer", "_limit", "_now", "_overflow", "_waiting", "_write")

    def __init__(
        self,
        write: Write,
        limit: int,
        overflow: Callable[[], None],
        now: WriteNow | None = None,
    ) -> None:
        self._write = write
        self._now = now
        self._limit = limit
        self._overflow = overflow
        self._backlog: deque[str] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._waiting: asyncio.Task[None] | None = None  # the write that had to wait

    def put(self, payload: str) -> None:
        if self._drainer is not None:  # a write is waiting: queue behind it
            if len(self._backlog) >= self._limit:
                self._overflow()
                return
            self._backlog.append(payload)
            return
        if self._now is not None and self._now(payload):
            return
        self._waiting = run_now(self._write(payload))
        if self._waiting is not None:
            self._drainer = asyncio.ensure_future(self._drain(self._waiting))

    async def _drain(self, pending: asyncio.Task[None]) -> None:
        try:
            await pending
            while self._backlog:
                await self._write(self._backlog.popleft())
        finally:
            self._drainer = self._waiting = None

    async def close(self) -> None:
        """Drop what waits; cancel a write in progress."""
        self._backlog.clear()
        tasks = [task for task in (self._waiting, self._drainer) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
