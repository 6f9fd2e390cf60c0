"""1,000 creates in one ``_bulk`` against 1,000 sequential POSTs (and the raw driver's
``insert_many`` of the same documents), in one run on one database.

Starts its own SecantusDB and ``python -m app`` on free 127.0.0.1 ports in a temporary
directory; the client is this process (one keep-alive connection, one request at a time, as
an integration would send them). Prints wall time for each, the ratio, and the medians of
``--repeat`` interleaved repetitions. Everything it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_realtime_procs import say, sign_in, start_server, stop_process, wait_healthy
from pymongo import AsyncMongoClient

from app.embedded import EmbeddedDatabase


def entity(n: int) -> dict[str, Any]:
    return {"title": f"order {n}", "amount": n * 1.5, "lines": [{"sku": "A-1", "qty": 2}]}


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    database = EmbeddedDatabase(workdir / "db", log_path=workdir / "secantusd.log")
    server = None
    try:
        await asyncio.to_thread(database.start)
        server, url, password = start_server(database.url, workdir, {"MONGODB_DB": "bench"})
        raw: AsyncMongoClient[Any] = AsyncMongoClient(database.url)
        timings: dict[str, list[float]] = {"sequential": [], "bulk": [], "raw": []}
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            await wait_healthy(http, server)
            http.headers["Authorization"] = f"Bearer {await sign_in(http, password)}"
            for repetition in range(args.repeat):
                bodies = [entity(n) for n in range(args.count)]
                order = ("bulk", "sequential") if repetition % 2 else ("sequential", "bulk")
                for kind in order:
                    store = f"{kind}{repetition}"
                    await http.post(f"/api/v1/{store}", json={"warm": True})  # store prepared
                    started = time.perf_counter()
                    if kind == "sequential":
                        for body in bodies:
                            response = await http.post(f"/api/v1/{store}", json=body)
                            assert response.status_code == 201, response.text
                    else:
                        operations = [{"op": "create", "entity": b} for b in bodies]
                        response = await http.post(
                            f"/api/v1/{store}/_bulk", json={"operations": operations}
                        )
                        assert response.status_code == 200, response.text
                        assert response.json()["success"], response.text
                    timings[kind].append(time.perf_counter() - started)
                    say(f"{kind}: {timings[kind][-1]:.2f} s")
                started = time.perf_counter()
                await raw.bench[f"raw{repetition}"].insert_many(
                    [entity(n) for n in range(args.count)]
                )
                timings["raw"].append(time.perf_counter() - started)
        await raw.close()
        median = {kind: statistics.median(values) for kind, values in timings.items()}
        print(f"\n{args.count} creates, {args.repeat} interleaved repetitions (medians)")
        print(f"{'how':<36}{'seconds':>9}{'creates/s':>11}")
        rows = (("sequential POSTs", "sequential"), ("one _bulk", "bulk"),
                ("raw driver insert_many", "raw"))  # fmt: skip
        for label, kind in rows:
            print(f"{label:<36}{median[kind]:>9.3f}{args.count / median[kind]:>11.0f}")
        quicker = median["sequential"] / median["bulk"]
        print(f"_bulk is {quicker:.1f}x quicker than sequential POSTs; "
              f"{median['bulk'] / median['raw']:.1f}x the raw insert_many")  # fmt: skip
    finally:
        stop_process(server)
        await asyncio.to_thread(database.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
