"""An open-loop HTTP load generator, run as its own process by the overload test:
``python -m tests.e2e.loadgen URL TOKEN STORE IDS_FILE RATE SECONDS OUT``.

Requests start on a fixed schedule whatever the server answers (so a slow server cannot slow
the load down), in the mix of the hardening issue: 35% GET by id, 15% list of 100, 25% POST,
15% PATCH, 10% DELETE of an entity this process created. Latency is counted from the
scheduled start. The results go to OUT as JSON.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

import aiohttp

TIMEOUT_S = 15.0


async def main(url: str, token: str, store: str, ids_file: str, rate: float, seconds: float):
    ids = json.loads(open(ids_file).read())  # noqa: ASYNC230, SIM115 - read once before the load
    rng = random.Random(hash(out_path))
    results: list[list[Any]] = []
    writes: list[list[str]] = []  # [op, id] of every write the server confirmed
    created: list[str] = []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(
        url, headers=headers, connector=connector, timeout=timeout
    ) as http:

        async def one(kind: str, scheduled: float) -> None:
            method, path, body = "GET", f"/api/v1/{store}/{rng.choice(ids)}", None
            if kind == "list":
                path = f"/api/v1/{store}?limit=100&offset={rng.randrange(200)}"
            elif kind == "post":
                method, path = "POST", f"/api/v1/{store}"
                body = {"n": rng.randrange(10**6), "text": "x" * 400, "access": ["*"]}
            elif kind == "patch":
                method, body = "PATCH", {"n": rng.randrange(10**6)}
            elif kind == "delete":
                method, path = "DELETE", f"/api/v1/{store}/{created.pop()}"
            status, retry_after = 0, None
            try:
                async with http.request(method, path, json=body) as response:
                    payload = await response.read()
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
                    if status in (200, 201) and kind in ("post", "patch", "delete"):
                        entity_id = path.rsplit("/", 1)[1]
                        if kind == "post":
                            entity_id = json.loads(payload)["_id"]
                            created.append(entity_id)
                        writes.append([kind, entity_id])
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = f"client error: {exc!r}"
            results.append([kind, status, time.monotonic() - scheduled, retry_after])

        kinds = ["get"] * 35 + ["list"] * 15 + ["post"] * 25 + ["patch"] * 15 + ["delete"] * 10
        tasks = []
        started = time.monotonic()
        for n in range(int(rate * seconds)):
            scheduled = started + n / rate
            await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
            kind = rng.choice(kinds)
            if kind == "delete" and not created:
                kind = "get"
            tasks.append(asyncio.create_task(one(kind, scheduled)))
        await asyncio.gather(*tasks)
    with open(out_path, "w") as out:  # noqa: ASYNC230 - written once after the load
        json.dump({"results": results, "writes": writes}, out)


if __name__ == "__main__":
    url, token, store, ids_file, rate, seconds, out_path = sys.argv[1:8]
    asyncio.run(main(url, token, store, ids_file, float(rate), float(seconds)))
