"""Our code's CPU per request without the HTTP server: the ASGI app called directly, against
the raw driver's operation, in one process on one event loop (uvloop, as served).

``scripts/bench`` measures through uvicorn and wrk, where the HTTP stack's own cost and the
machine's noise are most of what moves between runs. Here each request is a direct call of
the app (the whole middleware stack, authentication, checks, the insert or read, the JSON
answer), so what differs from the raw driver is our code alone. Rounds alternate API and raw;
POST rounds are run with the history recorder working (it reads every change back in this
process, as it does in a one-process server) and then again with it stopped, which shows
what history costs a write. The raw inserts go to a system collection (its name starts with
``_``), which the recorder does not follow, so the raw figure never includes it.

``scripts/bench-inprocess [--operations post,get] [--count 2000] [--rounds 4]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop
from bench_realtime_procs import say
from bson import ObjectId
from pymongo import AsyncMongoClient
from starlette.types import Message

from app.embedded import EmbeddedDatabase
from app.main import create_app
from app.settings import Settings
from app.storage import ENTITY_CODEC

DB = "platform"
STORE = "bench"
RAW_COLLECTION = "_bench_raw"  # not a store: the history recorder does not follow it
PASSWORD = "bench-admin-password-1"
TEXT = "x" * 400  # entities of about 540 bytes, as scripts/bench makes

One = Callable[[], Awaitable[None]]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _round(one: One, count: int, concurrency: int) -> float:
    """CPU µs per call of ``one``, ``count`` calls by ``concurrency`` workers."""
    await asyncio.sleep(1.0)  # what the previous round left (the recorder's last reads) ends
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    began = _cpu()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (_cpu() - began) / count * 1e6


def _caller(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Any:
    """A function calling the app with one request, as uvicorn would, checking the status."""

    async def call(body: bytes, expected: int) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
        }  # fmt: skip
        given = False

        async def receive() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # the client stays connected
            return {"type": "http.disconnect"}  # pragma: no cover

        statuses: list[int] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        if statuses != [expected]:
            raise SystemExit(f"{method} {path} answered {statuses}, not {expected}")

    return call


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-inprocess-"))
    database = EmbeddedDatabase(workdir / "db", log_path=workdir / "secantusd.log")
    await asyncio.to_thread(database.start)
    try:
        env = {
            "MONGODB_URL": database.url, "MONGODB_DB": DB, "DATA_DIR": str(workdir),
            "APP_SECRET": "bench-secret-0123456789-0123456789", "APP_ADMIN_PASSWORD": PASSWORD,
            "LOG_LEVEL": "warning", "GC_FREEZE_SECONDS": "0",
        }  # fmt: skip
        app = create_app(Settings.from_env(env))
        async with app.router.lifespan_context(app):
            await measure(app, database.url, args)
    finally:
        await asyncio.to_thread(database.stop)


async def measure(app: Any, url: str, args: argparse.Namespace) -> None:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
        login = {"login": "admin", "password": PASSWORD}
        token = (await http.post("/api/v1/auth/token", json=login)).json()["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        # The first write prepares the store (indexes, pre-images): not inside a round.
        made = await http.post(f"/api/v1/{STORE}", json={"name": "first"})
        if made.status_code != 201:
            raise SystemExit(f"the first POST failed: {made.status_code} {made.text}")
        ids = [made.json()["_id"]]
        for n in range(199):
            ids.append((await http.post(f"/api/v1/{STORE}", json={"n": n})).json()["_id"])
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    raw = client[DB].get_collection(RAW_COLLECTION, codec_options=ENTITY_CODEC)
    store = client[DB].get_collection(STORE, codec_options=ENTITY_CODEC)
    await raw.insert_one({"name": "first"})
    rng = random.Random(7)  # noqa: S311 - load shape, not a secret
    headers = [
        (b"host", b"bench"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-type", b"application/json"),
    ]
    post = _caller(app, "POST", f"/api/v1/{STORE}", headers)

    async def api_post() -> None:
        body = {"name": "bench", "n": rng.randrange(10**6), "text": TEXT}
        await post(orjson.dumps(body), 201)

    async def raw_post() -> None:
        moment = datetime.now(UTC)
        await raw.insert_one(
            {"name": "bench", "n": rng.randrange(10**6), "text": TEXT, "owner": "u",
             "group": None, "access": [], "branch": [], "createdAt": moment,
             "updatedAt": moment, "_readers": ["a:*", "u:u"]}
        )  # fmt: skip

    gets = {i: _caller(app, "GET", f"/api/v1/{STORE}/{i}", headers) for i in ids}
    object_ids = [ObjectId(i) for i in ids]

    async def api_get() -> None:
        await gets[rng.choice(ids)](b"", 200)

    async def raw_get() -> None:
        await store.find_one({"_id": rng.choice(object_ids)})

    results: dict[str, list[float]] = {}

    async def rounds(label: str, api: One, direct: One) -> None:
        for number in range(args.rounds):
            api_us = await _round(api, args.count, args.concurrency)
            raw_us = await _round(direct, args.count, args.concurrency)
            results.setdefault(f"{label} API", []).append(api_us)
            results.setdefault(f"{label} raw", []).append(raw_us)
            say(f"{label} round {number + 1}: API {api_us:.0f} µs, raw {raw_us:.0f} µs")

    operations = args.operations.split(",")
    if "get" in operations:
        await rounds("get", api_get, raw_get)
    if "post" in operations:
        await rounds("post", api_post, raw_post)
        await app.state.services.history.stop()
        await rounds("post, history stopped", api_post, raw_post)
    await client.close()
    report(results, args)


def report(results: dict[str, list[float]], args: argparse.Namespace) -> None:
    print(
        f"\nscripts/bench-inprocess --operations {args.operations} --count {args.count} "
        f"--rounds {args.rounds} --concurrency {args.concurrency} "
        f"({datetime.now(UTC):%Y-%m-%d}; medians of the rounds)\n"
    )
    print("| operation | API CPU µs/request | raw CPU µs/op | API / raw |")
    print("|---|---|---|---|")
    for label in dict.fromkeys(key.rsplit(" ", 1)[0] for key in results):
        api = statistics.median(results[f"{label} API"])
        raw = statistics.median(results[f"{label} raw"])
        print(f"| {label} | {api:.0f} | {raw:.0f} | {api / raw:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operations", default="post,get", help="post, get or both")
    parser.add_argument("--count", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if not set(args.operations.split(",")) <= {"post", "get"}:
        parser.error("--operations takes post, get or both")
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
