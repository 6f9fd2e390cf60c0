"""A deadline that holds: like ``asyncio.timeout``, but once it has passed it cancels the
task again every ``AGAIN_S`` until the block ends.

Once is not always enough. Python 3.11's ``asyncio.wait_for``, which the driver uses while it
opens a connection, loses a cancellation that arrives as the call it waits on completes.
With the database stopped, one of 16 requests sent together outlived its 0.7 s deadline by
15 s, on the driver's retries that the lost cancellation let start.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

AGAIN_S = 0.1


class Deadline:
    """``async with Deadline(seconds):`` raises TimeoutError out of the block when the
    deadline passed and cancelled it; a cancellation from elsewhere stays a cancellation."""

    __slots__ = ("_before", "_loop", "_seconds", "_sent", "_task", "_timer")

    def __init__(self, seconds: float):
        self._seconds = seconds
        self._sent = 0
        self._timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - every caller runs in a task
            raise RuntimeError("a deadline outside a task")
        self._task = task
        self._before = task.cancelling()  # cancellations owed from elsewhere already
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(self._seconds, self._cancel)
        return self

    def _cancel(self) -> None:
        self._sent += 1
        self._task.cancel()
        self._timer = self._loop.call_later(AGAIN_S, self._cancel)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for _ in range(self._sent):
            self._task.uncancel()
        owed = self._task.cancelling() > self._before
        if self._sent and kind is asyncio.CancelledError and not owed:
            raise TimeoutError from exc
