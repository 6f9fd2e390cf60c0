"""Realtime fan-out benchmark: many Socket.IO subscribers on one store, writes at a steady rate.

Starts its own SecantusDB and ``python -m app`` on free 127.0.0.1 ports in a temporary
directory. First a baseline: the same writes straight into the database, timed to a plain
PyMongo change stream. Then the subscribers connect (spread over client processes, see
``bench_realtime_worker.py``) and entities are POSTed at ``--rate``. Prints a table to
stdout, progress to stderr: latency from each write's HTTP response to its delivery at every
subscriber, delivered events/s, and the server's RSS per idle connection. Everything it starts
is stopped by PID when it ends, Ctrl-C and ``--timeout`` included.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from bench_realtime_procs import (
    BenchError,
    CpuMeter,
    Worker,
    raise_fd_limit,
    rss_kib,
    say,
    sign_in,
    start_server,
    stop_process,
    wait_healthy,
)
from bench_realtime_report import Measured, Write, render
from pymongo import AsyncMongoClient

from app.embedded import EmbeddedDatabase, EmbeddedDatabaseError

STORE = "bench"
RAW_DATABASE, RAW_COLLECTION = "bench_raw", "events"
SERVER_MAX_AWAIT_MS = 500  # what app.realtime.changes asks of its change stream


async def paced(count: int, rate: float, write: Callable[[int], Awaitable[bool]]) -> list[Write]:
    """Start ``write(seq)`` every 1/rate seconds whether or not the last one has answered,
    so a slow answer delays only itself, not the schedule."""

    async def one(seq: int) -> Write:
        sent = time.time()
        try:
            ok = await write(seq)
        except Exception as exc:
            say(f"write {seq} failed: {exc!r}")
            ok = False
        return Write(seq, sent, time.time(), ok)

    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks = []
    for seq in range(count):
        await asyncio.sleep(max(0.0, start + seq / rate - loop.time()))
        tasks.append(asyncio.create_task(one(seq)))
    return list(await asyncio.gather(*tasks))


async def raw_baseline(args: argparse.Namespace, db_url: str, workdir: Path, m: Measured) -> None:
    """From ``insert_one`` acknowledged to a plain change stream (another process) having it."""
    watch = ["watch", "--url", db_url, "--database", RAW_DATABASE, "--collection", RAW_COLLECTION]
    watch += ["--max-await-ms", str(SERVER_MAX_AWAIT_MS)]
    worker = await Worker.spawn(watch, workdir / "watch.json", args.timeout)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(db_url, timeoutMS=10_000)
    try:
        collection = client[RAW_DATABASE][RAW_COLLECTION]
        await collection.insert_one({"setup": True})  # the collection exists before the watch
        await worker.receive(30)

        async def insert(seq: int) -> bool:
            await collection.insert_one({"seq": seq})
            return True

        writes = await paced(args.writes, args.rate, insert)
        result = await worker.finish(sum(w.ok for w in writes), args.drain)
    finally:
        await worker.stop()
        await client.close()
    answered = {w.seq: w.answered for w in writes if w.ok}
    m.raw_latencies = [at - answered[seq] for seq, at in result["receipts"] if seq in answered]
    m.raw_round_trips = [w.answered - w.sent for w in writes if w.ok]


async def connect_subscribers(
    args: argparse.Namespace, url: str, token: str, workdir: Path, workers: list[Worker]
) -> int:
    """Start the subscriber processes; the number of clients subscribed once all are ready."""
    procs = min(args.client_procs, args.subscribers)
    shares = [args.subscribers // procs + (i < args.subscribers % procs) for i in range(procs)]
    for i, share in enumerate(shares):
        argv = ["subscribe", "--url", url, "--store", STORE, "--count", str(share)]
        argv += ["--batch", str(args.batch), "--connect-timeout", str(args.connect_timeout)]
        argv += ["--client", args.client]
        workers.append(await Worker.spawn(argv, workdir / f"subs-{i}.json", args.timeout, token))
    patience = math.ceil(max(shares) / args.batch) * args.connect_timeout + 30
    readies = [r["ready"] for r in await asyncio.gather(*(w.receive(patience) for w in workers))]
    connected = sum(ready["connected"] for ready in readies)
    if connected < args.subscribers:
        errors: dict[str, int] = {}
        for ready in readies:
            for message, count in ready["errors"].items():
                errors[message] = errors.get(message, 0) + count
        details = "\n".join(f"  {count} x {message}" for message, count in errors.items())
        raise BenchError(f"{connected} of {args.subscribers} subscribers connected:\n{details}")
    return connected


async def measure(
    args: argparse.Namespace,
    server: subprocess.Popen[bytes],
    url: str,
    password: str,
    database: EmbeddedDatabase,
    workdir: Path,
) -> Measured:
    m = Measured(args.subscribers, args.rate, load=os.getloadavg()[0], client=args.client)
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        await wait_healthy(http, server)
        token = await sign_in(http, password)
        http.headers["Authorization"] = f"Bearer {token}"

        async def post(seq: int) -> bool:
            reply = await http.post(f"/api/v1/{STORE}", json={"seq": seq, "access": ["*"]})
            if reply.status_code != 201:
                say(f"write {seq}: {reply.status_code} {reply.text[:200]}")
            return reply.status_code == 201

        if not await post(-1):
            raise BenchError("could not create the benchmark store")
        say(f"baseline: {args.writes} raw inserts at {args.rate:g}/s, one change stream")
        await raw_baseline(args, database.url, workdir, m)

        await asyncio.sleep(1)
        m.rss_before = rss_kib(server.pid)
        say(f"connecting {args.subscribers} subscribers from {args.client_procs} processes")
        workers: list[Worker] = []
        try:
            m.connected = await connect_subscribers(args, url, token, workdir, workers)
            say(f"all subscribed; {args.settle:g}s idle before reading the server's RSS")
            await asyncio.sleep(args.settle)
            m.rss_after = rss_kib(server.pid)

            say(f"writing {args.writes} entities at {args.rate:g}/s")
            assert database.pid is not None
            pids = {"server": server.pid, "database": database.pid, "bench": os.getpid()}
            pids.update({f"client{i}": w.pid for i, w in enumerate(workers)})
            meter = CpuMeter(pids)
            m.writes = await paced(args.writes, args.rate, post)
            expect = sum(w.ok for w in m.writes)
            say(f"writes done; waiting up to {args.drain:g}s for every delivery")
            m.results = list(await asyncio.gather(*(w.finish(expect, args.drain) for w in workers)))
            m.cpu = meter.shares()
        finally:
            await asyncio.gather(*(w.stop() for w in workers))
    return m


async def idle_instance(
    args: argparse.Namespace,
    server: subprocess.Popen[bytes],
    database: EmbeddedDatabase,
    workdir: Path,
) -> str:
    """A second server process with no subscribers, while raw inserts go at ``--idle-rate``
    into a store nobody watches: the CPU each server process uses meanwhile. The first server
    (started first) records entity history; the second has nothing to do."""
    second, url, _ = start_server(database.url, workdir)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(database.url, timeoutMS=10_000)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await wait_healthy(http, second)
        await asyncio.sleep(2)  # past its start-up work
        collection = client["platform"]["bench_unwatched"]
        count = int(args.idle_rate * args.idle_seconds)
        say(f"idle instance: {count} raw inserts at {args.idle_rate:g}/s into an unwatched store")
        assert database.pid is not None
        meter = CpuMeter({"recorder": server.pid, "idle": second.pid, "database": database.pid})

        async def insert(seq: int) -> bool:
            await collection.insert_one({"seq": seq, "pad": "x" * 400})
            return True

        writes = await paced(count, args.idle_rate, insert)
        cpu = meter.shares()
    finally:
        await client.close()
        stop_process(second)
    done = sum(w.ok for w in writes)
    return (
        f"\nidle instance: {done} raw inserts at {args.idle_rate:g}/s into a store no socket "
        f"watches\n{'CPU meanwhile':<22}second server (no subscribers) {cpu['idle']:.1%}, "
        f"first server (records history) {cpu['recorder']:.1%}, "
        f"SecantusDB {cpu['database']:.0%}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Quick smoke run: scripts/bench-realtime --subscribers 50 --writes 50",
    )
    add = parser.add_argument
    add("--subscribers", type=int, default=1000, help="Socket.IO clients (default 1000)")
    add("--writes", type=int, default=200, help="entities to POST (default 200)")
    add("--rate", type=float, default=20.0, help="writes per second (default 20)")
    add("--client-procs", type=int, default=2, help="subscriber processes (default 2)")
    add("--batch", type=int, default=50, help="connects in flight per process (default 50)")
    add(
        "--client",
        choices=["lean", "python-socketio"],
        default="lean",
        help="subscriber implementation: the lean Socket.IO v4 client in bench_sio_lean.py "
        "(default; a few µs per event) or python-socketio's AsyncClient (~60 µs per event)",
    )
    add("--connect-timeout", type=float, default=20.0, help="per connect+subscribe (default 20s)")
    add("--settle", type=float, default=3.0, help="idle time before reading RSS (default 3s)")
    add("--drain", type=float, default=60.0, help="wait for late deliveries (default 60s)")
    add("--idle-rate", type=float, default=300.0, help="idle-instance writes/s (default 300)")
    add(
        "--idle-seconds",
        type=float,
        default=0.0,
        help="then measure a second, idle server process this long (default 0: skip)",
    )
    add("--timeout", type=float, default=300.0, help="give up after this long (default 300s)")
    add("--per-write", action="store_true", help="also print each write's last-subscriber latency")
    args = parser.parse_args()
    if min(args.subscribers, args.writes, args.client_procs, args.batch) < 1 or args.rate <= 0:
        parser.error("counts and --rate must be positive")
    return args


def main() -> int:
    args = parse_args()
    raise_fd_limit(args.subscribers + 1024)
    workdir = Path(tempfile.mkdtemp(prefix="bench-realtime-"))
    database = EmbeddedDatabase(workdir / "db")
    server: subprocess.Popen[bytes] | None = None
    finished = False
    try:
        say(f"starting SecantusDB in {workdir}")
        database.start()
        server, url, password = start_server(database.url, workdir)
        say(f"server pid {server.pid} at {url}; SecantusDB pid {database.pid} at {database.url}")
        say(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

        async def bounded(server: subprocess.Popen[bytes]) -> str:
            async with asyncio.timeout(args.timeout):
                report = render(
                    await measure(args, server, url, password, database, workdir), args.per_write
                )
                if args.idle_seconds > 0:
                    report += await idle_instance(args, server, database, workdir)
                return report

        print(asyncio.run(bounded(server)), flush=True)
        finished = True
        return 0
    except TimeoutError:
        say(f"error: gave up after --timeout {args.timeout:g}s")
    except (BenchError, EmbeddedDatabaseError) as exc:
        say(f"error: {exc}")
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        Worker.kill_leftovers()
        stop_process(server)
        database.stop()
        if finished:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept {workdir} (server.log, secantusd.log)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
