"""``app.deadline.Deadline``: a deadline that cancels again what lost its first cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.deadline import Deadline


async def _loses_one_cancellation(done: list[str]) -> None:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        done.append("lost")  # as Python 3.11's asyncio.wait_for may lose it
    await asyncio.sleep(10)
    done.append("never")


async def test_a_passed_deadline_cancels_again_until_the_block_ends():
    done: list[str] = []
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with Deadline(0.05):
            await _loses_one_cancellation(done)
    assert done == ["lost"]
    assert time.monotonic() - started < 1
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    # asyncio.timeout cancels once: the block went on until an outer one ended it.
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5), asyncio.timeout(0.05):
            await _loses_one_cancellation(done)
    assert done == ["lost", "lost"] and time.monotonic() - started >= 0.45


async def test_a_block_that_ends_in_time_is_left_alone():
    async with Deadline(0.5):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.6)  # nothing is cancelled later


async def test_a_cancellation_from_elsewhere_stays_a_cancellation():
    async def run() -> None:
        async with Deadline(5):
            await asyncio.sleep(10)

    task = asyncio.create_task(run())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
