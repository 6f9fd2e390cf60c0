"""Concurrent database calls of one kind, sent together.

A request's insert or read by id costs the driver far more CPU as a command of its own (a
command, a round trip, two tasks per reply: about 170 µs of an insert's, measured) than
as one document of a larger one (about 15 µs in a batch of 16). So calls for the same store
are coalesced: a call that finds nothing on its way is sent at once, alone, from its
caller's own task, as it would be without coalescing; those that arrive while a call is on
its way are sent together as soon as it is back. Nothing waits on a timer, so a lone call is
not slowed, and under load each round trip carries what queued up meanwhile.

A batch runs in a task of its own, under a deadline of its own, so one caller giving up (its
deadline, its client gone) never stops a batch that carries others' calls. A call given up
before its batch is sent is left out of it; one given up after may still take effect, as a
single call may.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
# One call alone, in its caller's own task and under its caller's deadline.
One = Callable[[str, Item], Awaitable[Result]]
# A batch, in a task of its own and under a deadline of its own: one outcome per item, in
# order; an exception is raised to that item's caller alone. An exception the sender raises
# is raised to every caller.
Many = Callable[[str, list[Item]], Awaitable[list[Result | BaseException]]]


@dataclass
class _Queue(Generic[Item, Result]):
    waiting: list[tuple[Item, asyncio.Future[Result]]] = field(default_factory=list)
    sending: bool = False


class Coalescer(Generic[Item, Result]):
    def __init__(self, one: One[Item, Result], many: Many[Item, Result], most: int):
        self._one = one
        self._many = many
        self.most = most  # items per batch; more wait for the next one
        self._queues: dict[str, _Queue[Item, Result]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # sent so far, and the items in them (for tests and benchmarks)
        self.items = 0

    async def __call__(self, key: str, item: Item) -> Result:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
        if not queue.sending:
            # Nothing on its way: this call goes alone, as it would without coalescing, and
            # those that arrive meanwhile go together once it is back (or given up).
            queue.sending = True
            self.batches += 1
            self.items += 1
            try:
                return await self._one(key, item)
            finally:
                self._hand_on(key, queue)
        done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        queue.waiting.append((item, done))
        return await done  # cancelled with its caller: then left out, unless already sent

    def _hand_on(self, key: str, queue: _Queue[Item, Result]) -> None:
        """The call on its way is back: send what waits, in a task and a context of its own
        (no caller's deadline or state reaches a batch that carries others' calls)."""
        if not any(not done.done() for _, done in queue.waiting):
            queue.waiting.clear()
            queue.sending = False
            if self._queues.get(key) is queue:
                del self._queues[key]
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._drain(key, queue), context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop the batches on their way (their callers are told they were cancelled)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drain(self, key: str, queue: _Queue[Item, Result]) -> None:
        try:
            while batch := self._take(queue):
                await self._run(key, batch)
        finally:
            # Only a drain that was stopped (close) leaves calls waiting: none waits forever.
            for _, done in queue.waiting:
                done.cancel()
            queue.waiting.clear()
            queue.sending = False
            if self._queues.get(key) is queue:
                del self._queues[key]

    def _take(self, queue: _Queue[Item, Result]) -> list[tuple[Item, asyncio.Future[Result]]]:
        """The next batch: up to ``most`` of the waiting calls whose callers still wait."""
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        taken = 0
        for call in queue.waiting:
            taken += 1
            if not call[1].done():
                batch.append(call)
                if len(batch) == self.most:
                    break
        del queue.waiting[:taken]
        return batch

    async def _run(self, key: str, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            outcomes = await self._many(key, [item for item, _ in batch])
        except Exception as exc:  # the whole batch failed: each call raises it
            outcomes = [exc] * len(batch)
        except BaseException:  # cancelled (the server stopping): no outcome is known
            for _, done in batch:
                done.cancel()
            raise
        if len(outcomes) != len(batch):  # never left waiting, whatever the sender did
            outcomes = [RuntimeError("a batch came back with the wrong count")] * len(batch)
        for (_, done), outcome in zip(batch, outcomes, strict=False):
            if done.done():  # its caller gave up meanwhile
                continue
            if isinstance(outcome, BaseException):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)
