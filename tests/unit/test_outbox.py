"""A socket's outgoing events (app/realtime/outbox.py): written at once while the socket keeps
up, in order behind a write that has to wait, bounded."""

from __future__ import annotations

import asyncio

import pytest

from app.realtime.outbox import Outbox, run_now

pytestmark = pytest.mark.asyncio


class Socket:
    """Writes complete at once while ``open`` is set, and wait for it otherwise."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.written: list[str] = []

    async def write(self, payload: str) -> None:
        await self.open.wait()
        self.written.append(payload)


async def test_writes_that_need_no_wait_happen_before_put_returns():
    socket = Socket()
    tasks = len(asyncio.all_tasks())
    outbox = Outbox(socket.write, 10, lambda: pytest.fail("no overflow expected"))
    for n in range(5):
        outbox.put(str(n))
        assert socket.written[-1] == str(n)  # no task, no loop turn needed
    assert len(asyncio.all_tasks()) == tasks


async def test_events_after_a_waiting_write_follow_it_in_order():
    socket = Socket()
    outbox = Outbox(socket.write, 10, lambda: pytest.fail("no overflow expected"))
    outbox.put("a")
    socket.open.clear()  # the socket's buffer is full
    for payload in "bcd":
        outbox.put(payload)
    await asyncio.sleep(0.01)
    assert socket.written == ["a"]
    socket.open.set()
    await asyncio.sleep(0.01)
    assert socket.written == ["a", "b", "c", "d"]
    outbox.put("e")  # drained: written at once again
    assert socket.written[-1] == "e"


async def test_overflow_is_called_past_the_limit_and_nothing_more_is_kept():
    socket = Socket()
    socket.open.clear()
    overflows: list[int] = []
    outbox = Outbox(socket.write, 3, lambda: overflows.append(1))
    for n in range(6):  # 1 waiting write + 3 queued, then 2 too many
        outbox.put(str(n))
    assert overflows == [1, 1]
    socket.open.set()
    await asyncio.sleep(0.01)
    assert socket.written == ["0", "1", "2", "3"]


async def test_close_cancels_a_waiting_write_and_drops_the_queue():
    socket = Socket()
    socket.open.clear()
    outbox = Outbox(socket.write, 10, lambda: None)
    outbox.put("a")
    outbox.put("b")
    await outbox.close()
    socket.open.set()
    await asyncio.sleep(0.01)
    assert socket.written == []


async def test_run_now_carries_a_coroutine_through_futures_yields_and_errors():
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    seen: list[object] = []

    async def work() -> None:
        seen.append(await first)
        await asyncio.sleep(0)  # a bare yield
        try:
            await second
        except ValueError as exc:
            seen.append(str(exc))
        seen.append("done")

    task = run_now(work())
    assert task is not None and seen == []
    first.set_result(1)
    await asyncio.sleep(0.01)
    assert seen == [1]
    second.set_exception(ValueError("bad"))
    await asyncio.wait_for(task, 1)
    assert seen == [1, "bad", "done"]


async def test_cancelling_the_carrying_task_cancels_the_coroutine():
    loop = asyncio.get_running_loop()
    never = loop.create_future()
    cleaned: list[str] = []

    async def work() -> None:
        try:
            await never
        finally:
            cleaned.append("finally")

    task = run_now(work())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"] and never.cancelled()


async def test_a_write_that_can_be_made_at_once_skips_the_coroutine():
    socket = Socket()
    direct: list[str] = []

    def now(payload: str) -> bool:
        if socket.open.is_set():
            direct.append(payload)
            return True
        return False

    outbox = Outbox(socket.write, 10, lambda: pytest.fail("no overflow expected"), now=now)
    outbox.put("a")
    assert direct == ["a"] and socket.written == []
    socket.open.clear()  # now declines; the coroutine's write waits
    outbox.put("b")
    socket.open.set()  # a later event must not overtake the waiting one
    outbox.put("c")
    assert direct == ["a"]
    await asyncio.sleep(0.01)
    assert socket.written == ["b", "c"]
    outbox.put("d")  # drained: at once again
    assert direct == ["a", "d"]
