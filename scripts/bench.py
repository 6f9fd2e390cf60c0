"""REST benchmark: the API against the raw async driver doing the same database operations,
in one run on one database.

Starts its own SecantusDB and ``python -m app`` (``--workers``) on free 127.0.0.1 ports in a
temporary directory, seeds ``--entities`` entities readable by a group, and for each operation
(GET by id, POST, PATCH, list 100, list 10,000 with ``only``, ``meta``), as the admin and as a
non-admin reader (so the read rule is in every query), runs ``wrk`` against the server, then
``scripts/bench_raw.py`` doing the same database operations with PyMongo. Prints req/s,
p50/p99, server (or driver) CPU per request, database CPU per request, database operations per
request, and the ratios to raw. Progress goes to stderr. Everything it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from bench_realtime_procs import (
    HOST,
    cpu_seconds,
    free_port,
    say,
    sign_in,
    start_server,
    stop_process,
    wait_healthy,
)
from bson import ObjectId
from pymongo import AsyncMongoClient

from app import acl
from app.embedded import EmbeddedDatabase

STORE = "bench"
GROUP = "readers"
RAW = Path(__file__).with_name("bench_raw.py")
FLOOR = Path(__file__).with_name("bench_floor.py")
FLOOR_OPS = ("get", "post", "patch")  # what scripts/bench_floor.py serves
OPERATIONS = ("get", "post", "patch", "list100", "list10000", "meta")
PATHS = {
    "list100": f"/api/v1/{STORE}?limit=100",
    "list10000": f"/api/v1/{STORE}?limit=10000&only=n,name",
    "meta": f"/api/v1/{STORE}?meta=true",
}
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live children (the worker processes)."""
    total = cpu_seconds(pid)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += cpu_seconds(int(entry.name))
    return total


def lua(op: str, token: str, ids: list[str]) -> str:
    head = f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    head += 'wrk.headers["Content-Type"] = "application/json"\n'
    head += "ids = {" + ",".join(f'"{i}"' for i in ids) + "}\n"
    if op == "get":
        return head + (
            'request = function() return wrk.format("GET", '
            f'"/api/v1/{STORE}/" .. ids[math.random(#ids)]) end\n'
        )
    if op == "post":
        body = json.dumps({"name": "bench", "n": 1, "text": "x" * 400, "access": ["*"]})
        return head + f'wrk.method = "POST"\nwrk.path = "/api/v1/{STORE}"\nwrk.body = [[{body}]]\n'
    if op == "patch":
        return head + (
            'request = function() return wrk.format("PATCH", '
            f'"/api/v1/{STORE}/" .. ids[math.random(#ids)], nil, '
            "'{\"n\": ' .. math.random(1000000) .. '}') end\n"
        )
    return head + f'wrk.path = "{PATHS[op]}"\n'


def parse_wrk(text: str) -> dict[str, float]:
    found = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not found:
        raise RuntimeError(f"wrk printed no rate:\n{text}")
    result = {"rate": float(found[1])}
    for name, pct in (("p50", "50"), ("p99", "99")):
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        result[name] = float(match[1]) * _UNITS[match[2]] if match else float("nan")
    total = re.search(r"(\d+) requests in", text)
    result["requests"] = float(total[1]) if total else 0.0
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    result["errors"] = float(errors[1]) if errors else 0.0
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if socket:
        result["errors"] += sum(float(socket[n]) for n in range(1, 5))
    return result


async def opcount(client: AsyncMongoClient[Any]) -> int:
    counters = (await client.admin.command("serverStatus"))["opcounters"]
    return sum(int(v) for v in counters.values())


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("wrk not found; installing it with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        # Their output goes to stderr with the progress: stdout is the table alone.
        quiet = {"env": env, "stdout": sys.stderr}
        subprocess.run(["apt-get", "update", "-qq"], check=False, **quiet)  # noqa: S607
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, **quiet)  # noqa: S607
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is needed (Debian package wrk)")
    return found


async def seed(url: str, db_name: str, count: int) -> list[str]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(url)
    collection = client[db_name][STORE]
    readers = acl.readers_of("seed-owner", GROUP, [], [])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ids = []
    for first in range(0, count, 2000):
        batch = []
        for n in range(first, min(count, first + 2000)):
            moment = start + timedelta(milliseconds=n)
            oid = ObjectId()
            ids.append(str(oid))
            batch.append(
                {"_id": oid, "name": f"entity {n}", "n": n, "text": "x" * 400,
                 "owner": "seed-owner", "group": GROUP, "access": [], "branch": [],
                 "createdAt": moment, "updatedAt": moment, acl.READERS: readers}
            )  # fmt: skip
        await collection.insert_many(batch)
    await client.close()
    return ids


async def run(args: argparse.Namespace) -> None:
    wrk = ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    database = EmbeddedDatabase(workdir / "db", log_path=workdir / "secantusd.log")
    server = floor = None
    try:
        await asyncio.to_thread(database.start)
        db_name = "platform"
        say(f"database at {database.url}; seeding {args.entities} entities")
        ids = await seed(database.url, db_name, args.entities)
        sample = ids[:: max(1, len(ids) // 2000)]
        (workdir / "ids.json").write_text(json.dumps(sample))
        server, url, password = start_server(
            database.url, workdir, {"MONGODB_DB": db_name, "WORKERS": str(args.workers)}
        )
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await wait_healthy(http, server)
            admin = await sign_in(http, password)
            http.headers["Authorization"] = f"Bearer {admin}"
            body = {"login": "reader", "password": "reader-password-1", "groups": [GROUP]}
            reader_id = (await http.post("/api/v1/_users", json=body)).json()["id"]
            login = {"login": "reader", "password": "reader-password-1"}
            user = (await http.post("/api/v1/auth/token", json=login)).json()["token"]
            # The first write to a store prepares it (pre-images, indexes over what was
            # seeded); that happens once in a store's life, so not inside a measurement.
            warm = await http.post(f"/api/v1/{STORE}", json={"name": "warm-up"})
            if warm.status_code != 201:
                raise SystemExit(f"warm-up POST failed: {warm.status_code} {warm.text}")
        floor_url = ""
        if args.floor:
            floor, floor_url = start_floor(database.url, db_name, workdir)
            await wait_floor(floor, floor_url)
        # Its indexes are built in the background: wait for them before measuring anything.
        indexes: AsyncMongoClient[Any] = AsyncMongoClient(database.url)
        for _ in range(1200):
            if len(await indexes[db_name][STORE].index_information()) >= 3:
                break
            await asyncio.sleep(0.1)
        else:
            raise SystemExit("the store's indexes were not built within 120 s")
        await indexes.close()
        keys = {
            "admin": [],
            "user": acl.Principal(reader_id, "reader", groups=(GROUP,)).reader_keys(),
        }
        tokens = {"admin": admin, "user": user}
        meter: AsyncMongoClient[Any] = AsyncMongoClient(database.url)

        async def measure_api(
            op: str, role: str, connections: int, target: tuple[Any, str] = (server, url)
        ) -> dict[str, float]:
            process, address = target
            script = workdir / f"{op}-{role}.lua"
            script.write_text(lua(op, tokens.get(role, admin), sample))
            before = (tree_cpu(process.pid), cpu_seconds(database.pid), await opcount(meter))
            began = time.monotonic()
            found = await asyncio.to_thread(
                subprocess.run,
                [wrk, "-t2", f"-c{connections}", f"-d{args.seconds}s", "--latency",
                 "--timeout", "30s", "-s", str(script), address],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            after = (tree_cpu(process.pid), cpu_seconds(database.pid), await opcount(meter))
            span = time.monotonic() - began
            api = parse_wrk(found.stdout)
            n = max(api["requests"], 1.0)
            cpu = after[0] - before[0]
            return {
                "rate": api["rate"], "p50": api["p50"], "p99": api["p99"],
                "cpu": cpu / n * 1000, "net": max(0.0, cpu - idle * span) / n * 1000,
                "db": (after[1] - before[1]) / n * 1000,
                "ops": (after[2] - before[2] - 2) / n, "errors": api["errors"],
            }  # fmt: skip

        async def measure_raw(op: str, role: str, connections: int) -> dict[str, float]:
            before = (cpu_seconds(database.pid), await opcount(meter))
            raw_run = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, str(RAW), database.url, db_name, STORE, op,
                 str(connections), str(args.seconds), str(workdir / "ids.json"),
                 json.dumps(keys[role])],
                capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1],
            )  # fmt: skip
            after = (cpu_seconds(database.pid), await opcount(meter))
            raw = json.loads(raw_run.stdout.strip().splitlines()[-1])
            m = max(raw["ops"], 1)
            return {
                "rate": raw["ops"] / raw["span"], "p50": raw["p50"], "p99": raw["p99"],
                "cpu": raw["cpu"] / m * 1000, "net": raw["cpu"] / m * 1000,
                "db": (after[0] - before[0]) / m * 1000,
                "ops": (after[1] - before[1] - 2) / m, "errors": 0.0,
            }  # fmt: skip

        seeded_last = max(ObjectId(i) for i in ids)

        async def trim() -> None:
            """Delete what the POST runs added (about 400 entities a second each), so that
            every operation and repetition meets the seeded store: the embedded database
            scans a whole store for a list, so lists after the POSTs would measure its
            growth. Then wait for the server and the database to be done with the deletes
            (the server's change streams and history read every one)."""
            deleted = await meter[db_name][STORE].delete_many({"_id": {"$gt": seeded_last}})
            began = time.monotonic()
            last = (tree_cpu(server.pid), cpu_seconds(database.pid))
            while time.monotonic() - began < SETTLE_MAX_S:
                await asyncio.sleep(1.0)
                now = (tree_cpu(server.pid), cpu_seconds(database.pid))
                busy = max(now[0] - last[0] - idle, now[1] - last[1])
                last = now
                if busy < SETTLED:
                    break
            say(
                f"deleted the {deleted.deleted_count} entities the POSTs made; settled in "
                f"{time.monotonic() - began:.0f} s"
            )

        # What the server spends with no request at all (its change streams, lease and
        # definition polls, the driver's monitors): per request it weighs most on slow
        # operations, so the table also shows CPU per request net of it.
        idle_from, idle_began = tree_cpu(server.pid), time.monotonic()
        await asyncio.sleep(IDLE_S)
        idle = (tree_cpu(server.pid) - idle_from) / (time.monotonic() - idle_began)
        say(f"idle server: {idle * 1000:.1f} ms of CPU per second")
        args.idle_ms = idle * 1000
        runs: dict[tuple[str, str], tuple[list[dict[str, float]], list[dict[str, float]]]] = {}
        floors: dict[str, list[dict[str, float]]] = {}
        for repetition in range(args.repeat):
            for op in args.operations:
                for role in ("admin", "user"):
                    connections = 2 if op.startswith("list") or op == "meta" else args.connections
                    api_runs, raw_runs = runs.setdefault((op, role), ([], []))
                    # Interleaved: every other repetition measures the raw driver first, so
                    # neither side always meets the store grown by the other's writes.
                    if repetition % 2 == 0:
                        api_runs.append(await measure_api(op, role, connections))
                        raw_runs.append(await measure_raw(op, role, connections))
                    else:
                        raw_runs.append(await measure_raw(op, role, connections))
                        api_runs.append(await measure_api(op, role, connections))
                    say(
                        f"{op} as {role} ({repetition + 1}/{args.repeat}): "
                        f"{api_runs[-1]['rate']:.1f} req/s (raw {raw_runs[-1]['rate']:.1f})"
                    )
                if floor is not None and op in FLOOR_OPS:
                    floors.setdefault(op, []).append(
                        await measure_api(op, "floor", args.connections, (floor, floor_url))
                    )
                    say(f"{op} on the floor app: {floors[op][-1]['rate']:.1f} req/s")
                if op == "post":
                    await trim()
        rows = [
            (op, role, _median(api_runs), _median(raw_runs))
            for (op, role), (api_runs, raw_runs) in runs.items()
        ]
        await meter.close()
        print_table(rows, args)
        if floors:
            print_floor(rows, {op: _median(samples) for op, samples in floors.items()})
    finally:
        stop_process(floor)
        stop_process(server)
        await asyncio.to_thread(database.stop)
        shutil.rmtree(workdir, ignore_errors=True)


IDLE_S = 10.0  # /proc counts 10 ms ticks: 10 s resolve the idle rate to 1 ms/s
SETTLE_MAX_S = 60.0  # after trimming the store, wait at most this long for quiet
SETTLED = 0.05  # CPU seconds per second above idle, for the server and the database


def _median(samples: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the repetitions."""
    return {name: statistics.median(s[name] for s in samples) for name in samples[0]}


def print_table(rows: list[tuple[str, str, dict[str, float], dict[str, float]]], args) -> None:
    print(
        f"\nscripts/bench --entities {args.entities} --seconds {args.seconds} "
        f"--workers {args.workers} --repeat {args.repeat} "
        f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; medians; idle server "
        f"{args.idle_ms:.1f} ms CPU/s)\n"
    )
    print(
        "| operation | as | API req/s | raw ops/s | API p50 / p99 ms | API CPU ms/req (net of "
        "idle) | raw CPU ms/op | CPU ratio (net) | API DB CPU ms | raw DB CPU ms | DB ratio | "
        "DB ops/req (raw) | errors |"
    )
    print("|---" * 13 + "|")
    for op, role, api, raw in rows:
        cpu_ratio = api["cpu"] / raw["cpu"] if raw["cpu"] else float("nan")
        net_ratio = api["net"] / raw["cpu"] if raw["cpu"] else float("nan")
        db_ratio = api["db"] / raw["db"] if raw["db"] else float("nan")
        print(
            f"| {op} | {role} | {api['rate']:.1f} | {raw['rate']:.1f} | {api['p50']:.1f} / "
            f"{api['p99']:.1f} | {api['cpu']:.2f} ({api['net']:.2f}) | {raw['cpu']:.2f} | "
            f"{cpu_ratio:.2f}x ({net_ratio:.2f}x) | "
            f"{api['db']:.2f} | {raw['db']:.2f} | {db_ratio:.2f}x | {api['ops']:.2f} "
            f"({raw['ops']:.2f}) | {int(api['errors'])} |"
        )


def start_floor(db_url: str, db_name: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``scripts/bench_floor.py`` under uvicorn with the project's loop and HTTP parser."""
    port = free_port(HOST)
    env = {**os.environ, "FLOOR_MONGODB_URL": db_url, "FLOOR_DB": db_name, "FLOOR_STORE": STORE}
    with (workdir / "floor.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-m", "uvicorn", "--app-dir", str(FLOOR.parent), "bench_floor:app",
             "--host", HOST, "--port", str(port), "--loop", "uvloop", "--http", "httptools",
             "--log-level", "warning", "--no-access-log"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return process, f"http://{HOST}:{port}"


async def wait_floor(process: subprocess.Popen[bytes], url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        for _ in range(300):
            if process.poll() is not None:
                raise SystemExit("the floor app exited; see its log")
            try:
                await http.get(f"/api/v1/{STORE}/{ObjectId()}")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise SystemExit("the floor app did not start within 30 s")


def print_floor(
    rows: list[tuple[str, str, dict[str, float], dict[str, float]]],
    floors: dict[str, dict[str, float]],
) -> None:
    print(
        "\nThe floor (`--floor`): a bare Starlette app under uvicorn making the raw driver's "
        "calls, no code of ours\n"
    )
    print(
        "| operation | floor req/s | floor CPU ms/req | raw CPU ms/op (admin) | floor / raw | "
        "API admin / floor | API user / floor |"
    )
    print("|---" * 7 + "|")
    for op, floor in floors.items():
        api = {role: a for o, role, a, _ in rows if o == op}
        raw = next((r for o, role, _, r in rows if o == op and role == "admin"), None)
        if raw is None or not floor["cpu"]:
            continue
        print(
            f"| {op} | {floor['rate']:.1f} | {floor['cpu']:.2f} | {raw['cpu']:.2f} | "
            f"{floor['cpu'] / raw['cpu']:.2f}x | {api['admin']['cpu'] / floor['cpu']:.2f}x | "
            f"{api['user']['cpu'] / floor['cpu']:.2f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=20000)
    parser.add_argument("--seconds", type=int, default=8, help="per operation and side")
    parser.add_argument("--connections", type=int, default=16, help="for point operations")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--repeat", type=int, default=1, help="interleaved repetitions; medians are printed"
    )
    parser.add_argument("--operations", default=",".join(OPERATIONS))
    parser.add_argument("--timeout", type=float, default=600, help="give up after this long")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure a bare Starlette app making the raw driver's calls (get, post, patch)",
    )
    args = parser.parse_args()
    args.operations = [op for op in args.operations.split(",") if op]
    unknown = set(args.operations) - set(OPERATIONS)
    if unknown:
        parser.error(f"unknown operations: {sorted(unknown)}")
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except TimeoutError:
        raise SystemExit(f"the benchmark did not finish within {args.timeout} s") from None


if __name__ == "__main__":
    main()
