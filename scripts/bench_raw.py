"""The raw driver's side of ``scripts/bench``: the database operations one API request makes,
done straight with PyMongo's async client at a fixed concurrency for a fixed time.

``python scripts/bench_raw.py URL DB STORE OP CONCURRENCY SECONDS IDS_FILE READER_KEYS``
prints one JSON line: operations done, this process's CPU seconds, latency percentiles.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient

from app.storage import ENTITY_CODEC


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main() -> None:
    url, db_name, store, op, concurrency, seconds, ids_file, reader_keys = sys.argv[1:9]
    ids = [ObjectId(i) for i in json.loads(open(ids_file).read())]  # noqa: ASYNC230, SIM115
    keys = json.loads(reader_keys)
    read_filter: dict[str, Any] = {"_readers": {"$in": keys}} if keys else {}
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    collection = client[db_name].get_collection(store, codec_options=ENTITY_CODEC)
    rng = random.Random(7)  # noqa: S311 - load shape, not a secret

    async def one() -> None:
        if op == "get":
            await collection.find_one({"_id": rng.choice(ids)})
        elif op == "post":
            moment = datetime.now(UTC)
            await collection.insert_one(
                {"name": "bench", "n": rng.randrange(10**6), "text": "x" * 400, "owner": "u",
                 "group": None, "access": ["*"], "branch": [], "createdAt": moment,
                 "updatedAt": moment, "_readers": ["a:*", "u:u"]}
            )  # fmt: skip
        elif op == "patch":
            # Update and read back: on the embedded database findAndModify costs ~40x this.
            entity_id = rng.choice(ids)
            changes = {"n": rng.randrange(10**6), "updatedAt": datetime.now(UTC)}
            await collection.update_one({"_id": entity_id}, {"$set": changes})
            await collection.find_one({"_id": entity_id})
        elif op == "list100":
            await collection.find(read_filter).sort("_id", ASCENDING).limit(100).to_list()
        elif op == "list10000":
            cursor = collection.find(read_filter, {"n": 1, "name": 1}).sort("_id", ASCENDING)
            async for _ in cursor.limit(10000):
                pass
        elif op == "meta":
            await collection.count_documents(read_filter)
            await collection.find_one(read_filter, sort=[("_id", ASCENDING)])
            await collection.find_one(read_filter, sort=[("_id", DESCENDING)])

    latencies: list[float] = []
    await one()  # connect and warm up outside the measurement
    deadline = time.monotonic() + float(seconds)
    began_cpu = _cpu()
    began = time.monotonic()

    async def loop() -> None:
        while time.monotonic() < deadline:
            start = time.monotonic()
            await one()
            latencies.append(time.monotonic() - start)

    await asyncio.gather(*(loop() for _ in range(int(concurrency))))
    span = time.monotonic() - began
    cpu = _cpu() - began_cpu
    await client.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    print(json.dumps({"ops": len(latencies), "span": span, "cpu": cpu,
                      "p50": pct(0.5), "p99": pct(0.99)}))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
