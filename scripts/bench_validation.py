"""What a store definition costs a POST: the same 20-field entity posted to a store with a
20-field definition and to one without, in one run on one database.

Starts its own SecantusDB and ``python -m app`` on free 127.0.0.1 ports in a temporary
directory, defines one store (20 typed properties, 5 required, a format, a pattern, an enum,
a nested object and a default), and runs ``wrk`` (a separate process) against both stores in
interleaved repetitions. Prints req/s and the server's CPU per request for each, and the
difference; then, in this process, the schema check alone (jsonschema-rs, compiled once) per
entity. Everything it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from bench import ensure_wrk, parse_wrk
from bench_realtime_procs import (
    cpu_seconds,
    say,
    sign_in,
    start_server,
    stop_process,
    wait_healthy,
)

from app.embedded import EmbeddedDatabase
from app.schemas import Schema

DEFINED, PLAIN = "defined", "plain"
SCHEMA = {
    "type": "object",
    "required": ["title", "amount", "stage", "email", "contact"],
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 200},
        "amount": {"type": "number", "minimum": 0},
        "stage": {"enum": ["new", "qualified", "won", "lost"], "default": "new"},
        "email": {"type": "string", "format": "email"},
        "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{1,8}$"},
        "closesOn": {"type": "string", "format": "date"},
        "probability": {"type": "integer", "minimum": 0, "maximum": 100},
        "currency": {"type": "string", "minLength": 3, "maxLength": 3},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
        "source": {"type": "string"},
        "notes": {"type": "string", "maxLength": 2000},
        "owner_name": {"type": "string"},
        "region": {"type": "string"},
        "priority": {"type": "integer"},
        "active": {"type": "boolean"},
        "score": {"type": "number"},
        "website": {"type": "string", "format": "uri"},
        "phone": {"type": "string"},
        "industry": {"type": "string"},
        "contact": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "country": {"type": "string"}},
        },
    },
}
ENTITY = {
    "title": "Annual licence",
    "amount": 12000.5,
    "stage": "qualified",
    "email": "buyer@example.com",
    "code": "ABC-1234",
    "closesOn": "2027-03-31",
    "probability": 60,
    "currency": "EUR",
    "tags": ["renewal", "enterprise"],
    "source": "web",
    "notes": "x" * 200,
    "owner_name": "Ada",
    "region": "emea",
    "priority": 2,
    "active": True,
    "score": 7.5,
    "website": "https://example.com",
    "phone": "+49 30 123",
    "industry": "software",
    "contact": {"name": "Grace", "country": "DE"},
}


def lua(store: str, token: str) -> str:
    return (
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.method = "POST"\nwrk.path = "/api/v1/{store}"\n'
        f"wrk.body = [[{json.dumps(ENTITY)}]]\n"
    )


def check_alone(rounds: int) -> float:
    """Microseconds per entity for defaults + the schema check, in this process."""
    schema = Schema(SCHEMA)
    started = time.perf_counter()
    for _ in range(rounds):
        schema.check(schema.with_defaults(ENTITY))
    return (time.perf_counter() - started) / rounds * 1e6


async def run(args: argparse.Namespace) -> None:
    wrk = ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="bench-validation-"))
    database = EmbeddedDatabase(workdir / "db", log_path=workdir / "secantusd.log")
    server = None
    try:
        await asyncio.to_thread(database.start)
        server, url, password = start_server(database.url, workdir, {"MONGODB_DB": "bench"})
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            await wait_healthy(http, server)
            token = await sign_in(http, password)
            http.headers["Authorization"] = f"Bearer {token}"
            defined = await http.put(f"/api/v1/_stores/{DEFINED}", json={"schema": SCHEMA})
            if defined.status_code != 200:
                raise SystemExit(f"could not define the store: {defined.text}")
            for store in (DEFINED, PLAIN):
                warm = await http.post(f"/api/v1/{store}", json=ENTITY)
                if warm.status_code != 201:
                    raise SystemExit(f"warm-up POST to {store} failed: {warm.text}")
        scripts = {}
        for store in (DEFINED, PLAIN):
            scripts[store] = workdir / f"{store}.lua"
            scripts[store].write_text(lua(store, token))
        samples: dict[str, list[dict[str, float]]] = {DEFINED: [], PLAIN: []}
        for repetition in range(args.repeat):
            order = (PLAIN, DEFINED) if repetition % 2 else (DEFINED, PLAIN)
            for store in order:
                cpu = cpu_seconds(server.pid)
                result = await asyncio.to_thread(
                    subprocess.run,
                    [wrk, "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency",
                     "-s", str(scripts[store]), url],
                    capture_output=True, text=True, check=True, timeout=args.seconds + 60,
                )  # fmt: skip
                used = cpu_seconds(server.pid) - cpu
                measured = parse_wrk(result.stdout)
                if measured["errors"]:
                    raise SystemExit(f"{store}: {measured['errors']:.0f} failed requests")
                measured["cpu_ms"] = used / measured["requests"] * 1000
                samples[store].append(measured)
                say(f"{store}: {measured['rate']:.0f} req/s, {measured['cpu_ms']:.3f} ms CPU")
        median = {
            store: {k: statistics.median(s[k] for s in runs) for k in ("rate", "cpu_ms", "p50")}
            for store, runs in samples.items()
        }
        alone = check_alone(args.check_rounds)
        print(f"\nPOST of a 20-field entity, {args.repeat} interleaved runs of {args.seconds}s, "
              f"{args.connections} connections (medians)")  # fmt: skip
        print(f"{'store':<34}{'req/s':>8}{'p50 ms':>9}{'server CPU/req':>16}")
        for store, label in ((PLAIN, "no definition"), (DEFINED, "20-field definition")):
            row = median[store]
            print(f"{label:<34}{row['rate']:>8.0f}{row['p50']:>9.2f}{row['cpu_ms']:>13.3f} ms")
        extra = median[DEFINED]["cpu_ms"] - median[PLAIN]["cpu_ms"]
        ratio = median[DEFINED]["cpu_ms"] / median[PLAIN]["cpu_ms"]
        print(f"definition's cost per POST: {extra * 1000:+.0f} us of server CPU ({ratio:.2f}x)")
        print(f"schema check alone (defaults + jsonschema-rs), in process: {alone:.1f} us/entity")
    finally:
        stop_process(server)
        await asyncio.to_thread(database.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=6, help="per store and repetition")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--check-rounds", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
