"""The in-memory ``where`` test (what realtime subscriptions use) against the database's own
answer to the same query, on random entities and random filters."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from app.filters import from_json
from app.storage import Storage
from tests.helpers import unique

pytestmark = pytest.mark.asyncio

SCALARS: list[Any] = [0, 1, 2, -1, 1.0, 2.5, -0.5, "", "a", "b", "ab", "A", "Ab", "ba", "a.b",
                      "a*", "x(y", True, False, None]  # fmt: skip
PATHS = ["a", "b", "n", "obj.x", "obj.y", "obj.deep.z", "list", "items.x", "items.y", "createdAt"]
START = datetime(2026, 1, 1, tzinfo=UTC)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 2 and roll < 0.12:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 2 and roll < 0.2:
        return {
            k: random_value(rng, depth + 1) for k in rng.sample(["x", "y", "z"], rng.randint(0, 3))
        }
    return rng.choice(SCALARS)


def random_entity(rng: random.Random, n: int) -> dict[str, Any]:
    entity: dict[str, Any] = {"_id": ObjectId(), "createdAt": START + timedelta(seconds=n % 7)}
    for name in ("a", "b", "n", "list"):
        if rng.random() < 0.8:
            entity[name] = random_value(rng)
    if rng.random() < 0.7:
        obj: dict[str, Any] = {}
        for name in ("x", "y"):
            if rng.random() < 0.7:
                obj[name] = random_value(rng, 1)
        if rng.random() < 0.4:
            obj["deep"] = (
                {"z": rng.choice(SCALARS)} if rng.random() < 0.8 else [{"z": 1}, {"z": "a"}]
            )
        entity["obj"] = obj if rng.random() < 0.9 else rng.choice(SCALARS)
    if rng.random() < 0.7:
        entity["items"] = [
            {k: random_value(rng, 2) for k in rng.sample(["x", "y"], rng.randint(0, 2))}
            if rng.random() < 0.8
            else rng.choice(SCALARS)
            for _ in range(rng.randint(0, 3))
        ]
    return entity


def random_condition(rng: random.Random) -> dict[str, Any]:
    path = rng.choice(PATHS)
    if path == "createdAt":
        op = rng.choice(["_eq", "_neq", "_gt", "_gte", "_lt", "_lte", "_in", "_exists"])
        moment = int((START + timedelta(seconds=rng.randint(0, 7))).timestamp() * 1000)
        if op == "_in":
            return {path: {op: [moment, moment + 1000]}}
        if op == "_exists":
            return {path: {op: rng.random() < 0.5}}
        return {path: {op: moment}}
    op = rng.choice(["_eq", "_neq", "_gt", "_gte", "_lt", "_lte", "_in", "_nin", "_exists",
                     "_null", "_contains", "_icontains", "_starts_with", "short"])  # fmt: skip
    if op == "short":
        return {path: rng.choice(SCALARS)}
    if op in ("_exists", "_null"):
        return {path: {op: rng.random() < 0.5}}
    if op in ("_in", "_nin"):
        return {path: {op: rng.sample(SCALARS, rng.randint(0, 4))}}
    if op in ("_contains", "_icontains", "_starts_with"):
        return {path: {op: rng.choice(["a", "b", "A", "a.", "*", "(", "ab", "B"])}}
    value = rng.choice([v for v in SCALARS if v is not None and not isinstance(v, bool)])
    return {path: {op: value}}


def random_filter(rng: random.Random, depth: int = 1) -> dict[str, Any]:
    roll = rng.random()
    if depth < 4 and roll < 0.15:
        return {"_or": [random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    if depth < 4 and roll < 0.25:
        return {"_and": [random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    if depth < 4 and roll < 0.33:
        return {"_not": random_filter(rng, depth + 1)}
    found: dict[str, Any] = {}
    for _ in range(rng.randint(1, 2)):
        found.update(random_condition(rng))
    return found


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_memory_and_database_agree_on_random_filters(mongodb_url, seed):
    rng = random.Random(seed)
    storage = Storage(mongodb_url, "e2e")
    store = unique("agree")
    try:
        collection = storage.store(store)
        await collection.insert_many([random_entity(rng, n) for n in range(150)])
        documents = await collection.find({}).to_list()
        checked = matched = 0
        for _ in range(250):
            data = random_filter(rng)
            where = from_json(data)
            expected = {str(d["_id"]) for d in documents if where.matches(d)}
            found = {str(d["_id"]) async for d in collection.find(where.query(), {"_id": 1})}
            if expected != found:
                wrong = sorted(expected ^ found)[:3]
                examples = [d for d in documents if str(d["_id"]) in wrong]
                pytest.fail(f"filter {data} disagrees on {examples} (memory {expected > found})")
            checked += 1
            matched += len(found)
        # The filters were not all trivially empty or full.
        assert checked == 250 and 0 < matched < checked * len(documents)
    finally:
        await storage.db.drop_collection(store)
        await storage.close()
