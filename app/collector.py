"""Garbage collection for a process that holds many long-lived sockets.

CPython's cyclic collector walks every tracked object in a full (generation 2) pass, and
nothing else runs meanwhile. An open socket is about 115 tracked objects (the ASGI protocol,
the websocket state machine, tasks, queues), so 10,000 sockets make about 1.2 million, and one
full pass took 0.4-0.55 s on the development machine: the realtime benchmark's p99 was those
pauses. Objects that have lived a while are therefore frozen (``gc.freeze``) every
``GC_FREEZE_SECONDS``: they leave the collector's view, and its passes cover only what was
made since. Frozen objects are still freed by reference counting the moment they are no longer
used; only garbage *cycles* among them wait, so once every ``FULL_PASS_S`` they are all put
back and collected in one full pass (the one pause of that size, every quarter of an hour).

The youngest generation is also collected every ``YOUNG_THRESHOLD`` allocations instead of
CPython's 700: fanning one change out to 10,000 sockets allocates a few objects per socket
that live only until their frame is written, and with the default they were examined by
hundreds of young collections per change (7 % of the server's CPU in a ``perf`` profile).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)

FULL_PASS_S = 900.0
YOUNG_THRESHOLD = 10_000
_previous_threshold = gc.get_threshold()  # what ``start`` found, for ``stop``


async def keep_frozen(every_s: float, full_pass_s: float = FULL_PASS_S) -> None:
    """Freeze what survived, every ``every_s`` seconds, until cancelled."""
    gc.freeze()
    last_full = time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        if time.monotonic() - last_full >= full_pass_s:
            gc.unfreeze()
            started = time.perf_counter()
            found = gc.collect()
            log.info(
                "full garbage collection: %d unreachable objects in %.0f ms",
                found,
                (time.perf_counter() - started) * 1000,
            )
            last_full = time.monotonic()
        gc.freeze()


def start(every_s: float) -> asyncio.Task[None] | None:
    """The freezing task, or None when ``every_s`` is 0 (the collector left as it is)."""
    if every_s <= 0:
        return None
    global _previous_threshold
    _previous_threshold = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, *_previous_threshold[1:])
    return asyncio.create_task(keep_frozen(every_s), name="gc-freeze")


async def stop(task: asyncio.Task[None] | None) -> None:
    """Cancel ``start``'s task and leave the collector as it found it."""
    if task is None:
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    gc.unfreeze()
    gc.set_threshold(*_previous_threshold)
