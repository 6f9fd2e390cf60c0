"""What recording history costs the process that records it, against the raw driver doing
the least a recorder could do with the same changes, in one run on one database.

Starts its own SecantusDB in a temporary directory and three processes on it: the project's
recorder (``app.history.History``, holding the lease, reading the change stream and inserting
one entry per change), a raw PyMongo recorder (a change stream read at the same pace, each
read's documents inserted as they came into another collection with one ``insert_many``), and
a writer inserting entities at ``--rate`` for ``--seconds`` (every tenth one also updated).
Prints each recorder's CPU per change, net of what it spends idle, and the ratio.

``scripts/bench-history [--rate 400] [--seconds 20] [--repeat 2]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from bench_realtime_procs import say, stop_process
from bson import ObjectId

from app.embedded import EmbeddedDatabase

DB = "platform"
STORE = "bench"
IDLE_S = 3.0
DRAIN_S = 3.0  # after the last write, for the recorders to read and store the rest
ROOT = Path(__file__).resolve().parents[1]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))


async def _measure(start: float, end: float) -> tuple[float, float]:
    """This process's CPU seconds from ``start`` to ``end`` (epoch times), net of its idle
    rate measured just before; and that rate."""
    began = _cpu()
    await asyncio.sleep(IDLE_S)
    idle = (_cpu() - began) / IDLE_S
    await _sleep_until(start)
    began = _cpu()
    await _sleep_until(end)
    return _cpu() - began - idle * (end - start), idle


async def recorder(url: str, start: float, end: float) -> dict[str, float]:
    """The project's recorder, alone in this process."""
    from app.history import History
    from app.storage import HISTORY, Storage

    storage = Storage(url, DB)
    history = History(storage)
    await history.start()
    try:
        used, idle = await _measure(start, end)
        stored = await storage.system(HISTORY).count_documents({})
    finally:
        await history.stop()
        await storage.close()
    return {"cpu": used, "idle": idle, "stored": stored}


async def raw(url: str, start: float, end: float, pace_s: float) -> dict[str, float]:
    """The raw driver: the same stream, read at the same pace, each read's documents stored
    as they came in one insert."""
    from pymongo import AsyncMongoClient

    from app.realtime.changes import BUSY_READ, PACED_BATCH, STORE_EVENTS
    from app.storage import ENTITY_CODEC

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    db = client.get_database(DB, codec_options=ENTITY_CODEC)
    target = db["_raw_history"]
    stored = 0

    async def follow() -> None:
        nonlocal stored
        async with await db.watch(
            STORE_EVENTS,
            full_document_before_change="whenAvailable",
            max_await_time_ms=500,
            batch_size=PACED_BATCH,
        ) as stream:
            taken: list[dict[str, Any]] = []
            while True:
                change = await stream.try_next()
                if change is None:
                    continue
                taken.append({"_id": change["_id"]["_data"], "change": change})
                if not stream._cursor._data:  # the read is handed over: store it
                    await target.insert_many(taken, ordered=False)
                    stored += len(taken)
                    if len(taken) < BUSY_READ:
                        await asyncio.sleep(pace_s)
                    taken = []

    task = asyncio.create_task(follow())
    try:
        used, idle = await _measure(start, end)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    return {"cpu": used, "idle": idle, "stored": stored}


async def writer(url: str, start: float, seconds: float, rate: float) -> dict[str, float]:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    collection = client[DB][STORE]
    changes = 0
    await _sleep_until(start)
    began = time.monotonic()
    n = 0
    while time.monotonic() - began < seconds:
        moment = datetime.now(UTC)
        oid = ObjectId()
        await collection.insert_one(
            {"_id": oid, "name": "bench", "n": n, "text": "x" * 400, "owner": "u1",
             "group": None, "access": ["*"], "branch": [], "createdAt": moment,
             "updatedAt": moment, "_readers": ["a:*", "u:u1"], "_rev": 1, "_by": "u1.b"}
        )  # fmt: skip
        changes += 1
        if n % 10 == 9:
            await collection.update_one({"_id": oid}, {"$set": {"n": -n, "_rev": 2, "_by": "u2.b"}})
            changes += 1
        n += 1
        await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
    await client.close()
    return {"changes": changes}


def child(args: list[str]) -> None:
    role, url, start, end = args[0], args[1], float(args[2]), float(args[3])
    # On the loop the server runs on.
    if role == "recorder":
        result = uvloop.run(recorder(url, start, end))
    elif role == "raw":
        result = uvloop.run(raw(url, start, end, float(args[4])))
    else:
        result = uvloop.run(writer(url, start, end - start - DRAIN_S, float(args[4])))
    print(json.dumps(result), flush=True)


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and script
        [sys.executable, __file__, "--child", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip


async def one_run(url: str, args: argparse.Namespace) -> tuple[float, float, int]:
    from pymongo import AsyncMongoClient

    from app.history import PACE_S
    from app.storage import HISTORY

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    await client[DB][HISTORY].delete_many({})
    await client[DB]["_raw_history"].delete_many({})
    await client.close()
    start = time.time() + 10  # time for the recorders to start and measure their idle
    end = start + args.seconds + DRAIN_S
    processes = [
        _spawn("recorder", url, str(start), str(end)),
        _spawn("raw", url, str(start), str(end), str(PACE_S)),
        _spawn("writer", url, str(start), str(end), str(args.rate)),
    ]
    results = []
    try:
        for process in processes:
            out, _ = await asyncio.to_thread(process.communicate, timeout=end - time.time() + 60)
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            stop_process(process)  # type: ignore[arg-type]
    ours, theirs, written = results
    changes = int(written["changes"])
    if ours["stored"] < changes or theirs["stored"] < changes:
        say(f"not every change was stored: {ours['stored']} / {theirs['stored']} of {changes}")
    return ours["cpu"] / changes * 1e6, theirs["cpu"] / changes * 1e6, changes


async def run(args: argparse.Namespace) -> None:
    from app.storage import Storage

    workdir = Path(tempfile.mkdtemp(prefix="bench-history-"))
    database = EmbeddedDatabase(workdir / "db", log_path=workdir / "secantusd.log")
    try:
        await asyncio.to_thread(database.start)
        storage = Storage(database.url, DB)
        await storage.prepare_system()
        await storage.prepare_store(STORE)  # pre-images, as a store written by the API has
        await storage.close()
        rows = []
        for repetition in range(args.repeat):
            ours, theirs, changes = await one_run(database.url, args)
            say(f"run {repetition + 1}: {ours:.1f} µs against {theirs:.1f} µs per change")
            rows.append((ours, theirs, changes))
        ours_m = statistics.median(r[0] for r in rows)
        raw_m = statistics.median(r[1] for r in rows)
        print(
            f"\nscripts/bench-history --rate {args.rate:g} --seconds {args.seconds:g} --repeat "
            f"{args.repeat} ({time.strftime('%Y-%m-%d')}; CPU net of idle, medians)\n"
        )
        print("| recorder | CPU per change | ratio to raw |\n|---|---|---|")
        print(f"| the project's (`app.history`) | {ours_m:.1f} µs | {ours_m / raw_m:.2f}x |")
        print(f"| raw driver, same stream and pace | {raw_m:.1f} µs | 1.00x |")
        print(f"\nchanges per run: {', '.join(str(r[2]) for r in rows)}")
    finally:
        await asyncio.to_thread(database.stop)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=400, help="inserts per second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
