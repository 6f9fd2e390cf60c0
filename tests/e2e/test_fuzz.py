"""No request, however malformed, gets a 500 or a stack trace: a seeded, bounded random walk
over every route with garbage methods, paths, parameters, headers and bodies."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

pytestmark = pytest.mark.asyncio

VALUES: list[Any] = [
    None, True, 1, -1, 2**63 - 1, 2**63, 1.5, "", "x", "$gt", "a.b", "\u0000", [], {}, {"$gt": 1},
    ["*"], [1], {"a": {"b": []}}, "65f0aaaaaaaaaaaaaaaaaaaa", "\U0001f4a5", "a" * 300,
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


def _object(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    return {
        rng.choice(KEYS): _object(rng, depth + 1)
        if depth < 3 and rng.random() < 0.2
        else rng.choice(VALUES)
        for _ in range(rng.randint(0, 4))
    }


def _body(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.6:
        return json.dumps(_object(rng)).encode()
    if kind < 0.8:
        return json.dumps(rng.choice(VALUES)).encode()
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))


async def test_no_request_gets_a_server_error(admin, make_user):
    user = await make_user(groups=["g"])
    entity = (await user.post("/api/v1/fuzzed", json={"a": 1})).json()
    rng = random.Random(20261125)  # noqa: S311 - a repeatable walk, not a secret
    statuses: dict[int, int] = {}
    failures = []
    for _ in range(REQUESTS):
        caller = rng.choice([admin, user])
        path = rng.choice(PATHS).format(
            s=rng.choice(["fuzzed", "fuzzed2", "auth", "_x", "1a"]),
            i=rng.choice([entity["_id"], "zz", "65f0aaaaaaaaaaaaaaaaaaaa", admin.id, "%00"]),
        )
        method = rng.choice(["GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS"])
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
        if response.status_code >= 500 or "Traceback" in response.text:
            failures.append((method, path, params, response.status_code, response.text[:200]))
    assert not failures, failures[:5]
    # The walk reached real work, not only routing errors.
    assert statuses.get(200, 0) > 50 and statuses.get(400, 0) > 50 and statuses.get(404, 0) > 50
