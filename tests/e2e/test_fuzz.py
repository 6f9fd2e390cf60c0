"""No request, however malformed, gets a 500 or a stack trace: a seeded, bounded random walk
over every route with garbage methods, paths, parameters, headers and bodies (dotted keys of
hundreds of segments, integers beyond 64 bits, operator objects, very deep documents), over
stores that also hold entities written straight into the database; afterwards every entity
the walk managed to write still reads back, alone and in lists."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from bson import ObjectId

from app import acl

pytestmark = pytest.mark.asyncio

VALUES: list[Any] = [
    None, True, 1, -1, 2**63 - 1, 2**63, 1.5, "", "x", "$gt", "a.b", "\u0000", [], {}, {"$gt": 1},
    ["*"], [1], {"a": {"b": []}}, "65f0aaaaaaaaaaaaaaaaaaaa", "\U0001f4a5", "a" * 300,
    {"$ne": None}, {"$gt": ""}, {"$regex": ".*"}, {"$where": "1"}, {"$expr": {}},
    {"$not": {"$size": 5}}, {"$exists": True}, [{"$in": ["*"]}],
]  # fmt: skip
BIG_INTEGERS = [
    "18446744073709551616", "9223372036854775808", "-9223372036854775809", "1" + "0" * 30,
]  # fmt: skip
KEYS = [
    "a", "_id", "owner", "group", "access", "branch", "createdAt", "updatedAt", "$x", "a.b",
    "_readers", "", "login", "password", "name", "groups", "admin", "disabled", "expiresIn",
    "x..y", "a.$b", "n\u0000", "store", "id",
]  # fmt: skip
PARAMS = ["limit", "offset", "only", "meta", "from", "to", "begin", "end", "after", "x"]
PARAM_VALUES = [
    "", "-1", "0", "1", "99999999999999999999", "abc", "true", "2020-01-01T00:00", "1e3", "a,b",
    "a..b", "$where", "65f0aaaaaaaaaaaaaaaaaaaa", "2020-13-45T99:99", "\x00", "\U0001f4a5",
    "0001-01-01T00:00-23:59", "9999-12-31T23:59+", "-99999999999999",
]  # fmt: skip
PATHS = [
    "/api/v1/{s}", "/api/v1/{s}/{i}", "/api/v1/{s}/{i}/access", "/api/v1/_users",
    "/api/v1/_users/{i}", "/api/v1/_tokens", "/api/v1/_tokens/{i}", "/api/v1/auth",
    "/api/v1/auth/token", "/api/v1/_me", "/healthz", "/api/v1/{s}/{i}/x", "/socket.io/",
    "/api/v1/%24where", "/api/v1/a%2Fb", "/api/v1/{s}/%2e%2e", "/api/v1//",
]  # fmt: skip
REQUESTS = 4000
STORES = ["fuzzed", "fuzzed2", "auth", "_x", "1a"]


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"d": value}
    return value


def _key(rng: random.Random) -> str:
    if rng.random() < 0.15:  # a dotted path of any length up to several hundred segments
        return ".".join(["k"] * rng.randint(2, 400))
    return rng.choice(KEYS)


def _object(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    return {
        _key(rng): _object(rng, depth + 1)
        if depth < 3 and rng.random() < 0.2
        else _nested(rng.choice([60, 63, 64, 65, 100, 300]))
        if rng.random() < 0.05
        else rng.choice(VALUES)
        for _ in range(rng.randint(0, 4))
    }


def _body(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.55:
        return json.dumps(_object(rng)).encode()
    if kind < 0.65:  # an integer literal beyond 64 bits somewhere in the text
        return f'{{"{_key(rng)}": {{"n": [1, {rng.choice(BIG_INTEGERS)}]}}}}'.encode()
    if kind < 0.8:
        return json.dumps(rng.choice(VALUES)).encode()
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))


async def _plant(app, owner: str) -> None:
    """Entities another program wrote: deeper than the API accepts, odd field names."""
    storage = app.state.services.storage
    readers = acl.readers_of(owner, None, ["*"], [])
    for store in ("fuzzed", "fuzzed2"):
        await storage.prepare_store(store)
        for levels in (64, 65, 100, 200):
            await storage.store(store).insert_one(
                {"_id": ObjectId(), "deep": _nested(levels), "owner": owner, "access": ["*"],
                 acl.READERS: readers}
            )  # fmt: skip


async def test_no_request_gets_a_server_error(app, admin, make_user):
    user = await make_user(groups=["g"])
    await _plant(app, admin.id)
    entity = (await user.post("/api/v1/fuzzed", json={"a": 1})).json()
    rng = random.Random(20261125)
    statuses: dict[int, int] = {}
    failures = []
    written = [entity["_id"]]
    for _ in range(REQUESTS):
        caller = rng.choice([admin, user])
        path = rng.choice(PATHS).format(
            s=rng.choice(STORES),
            i=rng.choice([rng.choice(written), "zz", "65f0aaaaaaaaaaaaaaaaaaaa", admin.id, "%00"]),
        )
        method = rng.choice(["GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS"])
        if rng.random() < 0.2:  # well-formed writes with hostile content
            method = rng.choice(["POST", "PATCH"])
            target = rng.choice(["fuzzed", "fuzzed2"])
            path = f"/api/v1/{target}" + (f"/{rng.choice(written)}" if method == "PATCH" else "")
        if method == "DELETE" and path.startswith("/api/v1/auth"):
            continue  # signing the caller out would end the walk early
        if caller is admin and path.startswith("/api/v1/_users/") and method != "GET":
            continue  # changing accounts would do the same
        headers = {
            "Content-Type": rng.choice(["application/json", "text/plain", "application/x+json"]),
            "X-Request-Id": rng.choice(["ok-1", "bad id", "x" * 300]),
            "Origin": rng.choice(["http://testserver", "http://evil", "null"]),
        }
        if rng.random() < 0.1:
            headers["Content-Length"] = rng.choice(["abc", "-1", "99999999999"])
        params = {rng.choice(PARAMS): rng.choice(PARAM_VALUES) for _ in range(rng.randint(0, 3))}
        response = await caller.client.request(
            method, path, params=params, content=_body(rng), headers=headers
        )
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code == 201 and "/_" not in path:
            written.append(response.json()["_id"])
        if response.status_code >= 500 or "Traceback" in response.text:
            failures.append((method, path, params, response.status_code, response.text[:200]))
    assert not failures, failures[:5]
    # The walk reached real work, not only routing errors.
    assert statuses.get(200, 0) > 50 and statuses.get(400, 0) > 50 and statuses.get(404, 0) > 50
    assert statuses.get(201, 0) > 20, statuses

    # Whatever the walk managed to write (and what was planted) reads back, for everyone.
    for store in ("fuzzed", "fuzzed2"):
        for reader in (admin, user):
            listed = await reader.get(f"/api/v1/{store}")
            assert listed.status_code == 200
            entities = orjson.loads(listed.content)  # complete JSON, not cut off
            for found in entities:
                one = await reader.get(f"/api/v1/{store}/{found['_id']}")
                assert one.status_code == 200, one.text
                assert one.json()["_id"] == found["_id"]
            meta = await reader.get(f"/api/v1/{store}", params={"meta": "true"})
            assert meta.status_code == 200 and meta.json()["count"] == len(entities)
