"""What expiring old records costs everyone else: the slowest writes of a steady writer while
the history collection holds ``--entries`` entries, with a TTL index on ``at`` (what earlier
versions made, expired by the embedded database's own sweeper once a minute) and with the
server's expiry passes (``app.expiry``) over a plain index, each on a fresh SecantusDB.

Both runs hold the same entries, ``--expired`` of them past the retention, and last
``--seconds`` (over 60, so that the database's minutely sweeper runs at least once). Prints,
per run, the writes made, their p50 / p99 / slowest, how many took over 100 ms, and how many
expired entries were left at the end.

``scripts/bench-expiry [--entries 40000] [--expired 2000] [--seconds 70]``
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvloop
from bench_realtime_procs import say
from pymongo import AsyncMongoClient

from app.embedded import EmbeddedDatabase
from app.expiry import Expiry, Rule
from app.storage import HISTORY, Storage

DB = "platform"
RETENTION_S = 86400
PASS_S = 10.0  # the server's passes, more often than its default so that a run sees several
SLOW_S = 0.1


def _entry(at: datetime, n: int) -> dict[str, Any]:
    changes = {f"field{i}": {"from": None, "to": f"value {n} {i:02d} " * 3} for i in range(12)}
    return {"_id": f"bench:{n}", "store": "bench", "entity": n, "rev": 1, "op": "create",
            "at": at, "by": None, "changes": changes}  # fmt: skip


async def _fill(client: AsyncMongoClient[dict[str, Any]], entries: int, expired: int) -> None:
    moment = datetime.now(UTC)
    history = client[DB][HISTORY]
    for first in range(0, entries, 1000):
        batch = []
        for n in range(first, min(entries, first + 1000)):
            age = RETENTION_S + 60 + n if n < expired else n % 3600
            batch.append(_entry(moment - timedelta(seconds=age), n))
        await history.insert_many(batch, ordered=False)


async def _write_for(client: AsyncMongoClient[dict[str, Any]], seconds: float) -> list[float]:
    store = client[DB]["bench"]
    latencies = []
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        began = time.perf_counter()
        await store.insert_one({"name": "steady", "n": len(latencies)})
        latencies.append(time.perf_counter() - began)
    return latencies


async def _run_once(args: argparse.Namespace, ttl: bool) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-expiry-"))
    database = EmbeddedDatabase(workdir / "db", log_path=workdir / "secantusd.log")
    try:
        await asyncio.to_thread(database.start)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(database.url)
        storage = Storage(database.url, DB)
        sweeper = Expiry(storage, (Rule(HISTORY, "at", RETENTION_S),), every_s=PASS_S * 2)
        try:
            if ttl:
                await client[DB][HISTORY].create_index("at", expireAfterSeconds=RETENTION_S)
            else:
                await sweeper.prepare()
            say(f"{'TTL index' if ttl else 'expiry passes'}: storing {args.entries} entries")
            await _fill(client, args.entries, args.expired)
            if not ttl:
                sweeper.start()  # waits 0.5-1x every_s before its first pass
            say(f"writing for {args.seconds:.0f} s")
            latencies = sorted(await _write_for(client, args.seconds))
            await sweeper.stop()
            cutoff = datetime.now(UTC) - timedelta(seconds=RETENTION_S)
            left = await client[DB][HISTORY].count_documents({"at": {"$lt": cutoff}})
        finally:
            await storage.close()
            await client.close()
    finally:
        await asyncio.to_thread(database.stop)
        shutil.rmtree(workdir, ignore_errors=True)
    n = len(latencies)
    return {
        "writes": n,
        "p50": latencies[n // 2] * 1000,
        "p99": latencies[int(n * 0.99)] * 1000,
        "max": latencies[-1] * 1000,
        "slow": sum(1 for s in latencies if s > SLOW_S),
        "left": left,
    }


async def run(args: argparse.Namespace) -> None:
    rows = [("TTL index (earlier versions)", await _run_once(args, ttl=True)),
            ("expiry passes (app.expiry)", await _run_once(args, ttl=False))]  # fmt: skip
    print(
        f"\n`scripts/bench-expiry --entries {args.entries} --expired {args.expired} "
        f"--seconds {args.seconds:g}`\n"
    )
    print("| expired by | writes | p50 ms | p99 ms | slowest ms | over 100 ms | expired left |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['writes']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.0f} | "
            f"{r['slow']:.0f} | {r['left']:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=40_000)
    parser.add_argument("--expired", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=70.0)
    args = parser.parse_args()
    if args.seconds < 61:
        parser.error("--seconds must exceed 60: the database's sweeper runs once a minute")
    if not 0 <= args.expired <= args.entries:
        parser.error("--expired must be between 0 and --entries")
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
