"""The garbage-collection policy for servers holding many sockets (app/collector.py)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from app import collector

pytestmark = pytest.mark.asyncio


async def test_survivors_are_frozen_and_everything_is_put_back_on_stop():
    before = gc.get_threshold()
    assert collector.start(0) is None  # off: nothing changes
    assert gc.get_threshold() == before
    task = collector.start(0.02)
    try:
        assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD
        kept = [[n] for n in range(1000)]  # long-lived, tracked objects
        await asyncio.sleep(0.1)
        assert gc.get_freeze_count() >= len(kept)
    finally:
        await collector.stop(task)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold()[0] == 700


async def test_a_full_pass_collects_cycles_among_frozen_objects():
    task = asyncio.create_task(collector.keep_frozen(0.02, full_pass_s=0.1))
    try:

        class Node:
            pass

        cycle = Node()
        cycle.me = cycle  # type: ignore[attr-defined]
        marker = id(cycle)
        await asyncio.sleep(0.05)  # frozen now
        del cycle
        await asyncio.sleep(0.3)  # the full pass has run
        assert all(id(o) != marker for o in gc.get_objects() if type(o).__name__ == "Node")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gc.unfreeze()
