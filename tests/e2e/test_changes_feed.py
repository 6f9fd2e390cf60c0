"""``GET /:store/_changes``: every change once, in commit order, with deletes, for what the
caller may read; cursors, retention and concurrent writers on two instances."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.e2e.conftest import client_for, make_settings
from tests.e2e.support import running
from tests.helpers import assert_api_error

pytestmark = pytest.mark.asyncio


async def poll(user, store, cursor, **params):
    response = await user.get(f"/api/v1/{store}/_changes", params={"since": cursor, **params})
    assert response.status_code == 200, response.text
    return response.json()


async def drain(user, store, cursor, wanted: int, within: float = 20.0, **params):
    """Poll from ``cursor`` until ``wanted`` changes arrived; the changes and the last cursor."""
    seen: list[dict] = []
    deadline = time.monotonic() + within
    while len(seen) < wanted:
        assert time.monotonic() < deadline, f"only {len(seen)} of {wanted} changes arrived"
        page = await poll(user, store, cursor, **params)
        seen += page["changes"]
        cursor = page["next"]
        if not page["changes"]:
            await asyncio.sleep(0.05)
    return seen, cursor


async def test_the_feed_starts_now_and_reports_every_kind_of_change(make_user, store):
    user = await make_user()
    start = await user.get(f"/api/v1/{store}/_changes")
    assert start.status_code == 200 and start.json()["changes"] == []
    cursor = start.json()["next"]
    made = (await user.post(f"/api/v1/{store}", json={"n": 1})).json()
    await user.patch(f"/api/v1/{store}/{made['_id']}", json={"n": 2})
    await user.delete(f"/api/v1/{store}/{made['_id']}")
    changes, cursor = await drain(user, store, cursor, 3)
    assert [(c["op"], c["rev"]) for c in changes] == [("create", 1), ("update", 2), ("delete", 2)]
    assert changes[0]["entity"] == made and changes[1]["entity"]["n"] == 2
    assert "entity" not in changes[2] and changes[2]["id"] == made["_id"]
    assert all(isinstance(c["ts"], int) for c in changes)
    assert (await poll(user, store, cursor))["changes"] == []  # nothing twice


async def test_since_zero_reads_the_retained_history(make_user, store):
    user = await make_user()
    for n in range(3):
        await user.post(f"/api/v1/{store}", json={"n": n})
    changes, _ = await drain(user, store, "0", 3)
    assert [c["entity"]["n"] for c in changes] == [0, 1, 2]


async def test_the_feed_follows_access_where_only_and_limit(admin, make_user, store):
    user = await make_user(groups=["sales"])
    cursor = (await user.get(f"/api/v1/{store}/_changes")).json()["next"]
    secret = (await admin.post(f"/api/v1/{store}", json={"n": 0})).json()
    shared = (await admin.post(f"/api/v1/{store}", json={"n": 1, "group": "sales", "x": 1})).json()
    await admin.put(f"/api/v1/{store}/{secret['_id']}/access", json={"access": ["*"]})
    await admin.put(f"/api/v1/{store}/{shared['_id']}/access", json={"group": None})
    for n in range(2, 6):
        await admin.post(f"/api/v1/{store}", json={"n": n, "group": "sales"})
    changes, _ = await drain(user, store, cursor, 7, only="n")
    assert [(c["op"], c["id"]) for c in changes[:3]] == [
        ("create", shared["_id"]), ("enter", secret["_id"]), ("leave", shared["_id"]),
    ]  # fmt: skip
    assert changes[0]["entity"] == {"_id": shared["_id"], "n": 1}
    page = await poll(user, store, cursor, limit="2", where='{"n": {"_gte": 3}}')
    assert [c["entity"]["n"] for c in page["changes"]] == [3, 4]  # limit counts what is sent
    matching, _ = await drain(user, store, cursor, 3, where='{"n": {"_gte": 3}}')
    assert [c["entity"]["n"] for c in matching] == [3, 4, 5]
    limited = await poll(user, store, cursor, limit="1")
    assert len(limited["changes"]) == 1 and limited["changes"][0]["id"] == shared["_id"]


async def test_bad_cursors_and_parameters(make_user, store):
    user = await make_user()
    url = f"/api/v1/{store}/_changes"
    for params, field in [({"since": "junk"}, "since"), ({"limit": "0"}, "limit"),
                          ({"limit": "1001"}, "limit"), ({"where": "{"}, "where")]:  # fmt: skip
        body = assert_api_error(await user.get(url, params=params), 400, "INVALID")
        assert body["message"].startswith(field)


async def test_a_cursor_past_the_retention_is_gone(settings, admin, store, tmp_path):
    short = make_settings(settings.mongodb_url, tmp_path, CHANGES_RETENTION_DAYS="0.00002")
    async with running(short) as other, client_for(other) as client:
        client.headers["Authorization"] = admin.client.headers["Authorization"]
        cursor = (await client.get(f"/api/v1/{store}/_changes")).json()["next"]
        assert (
            await client.get(f"/api/v1/{store}/_changes", params={"since": cursor})
        ).status_code == 200
        await asyncio.sleep(2.5)  # 0.00002 days is 1.7 s
        expired = await client.get(f"/api/v1/{store}/_changes", params={"since": cursor})
        assert_api_error(expired, 410, "RESUME_EXPIRED")


async def test_concurrent_writers_on_two_instances_are_each_seen_once(app, settings, admin, store):
    cursor = (await admin.get(f"/api/v1/{store}/_changes")).json()["next"]
    acknowledged: list[tuple[str, str, int]] = []
    async with running(settings) as other, client_for(other) as second:
        second.headers["Authorization"] = admin.client.headers["Authorization"]

        async def writer(client, tag: str) -> None:
            for n in range(40):
                made = await client.post(f"/api/v1/{store}", json={"tag": tag, "n": n})
                assert made.status_code == 201, made.text
                entity = made.json()
                acknowledged.append(("create", entity["_id"], 1))
                if n % 4 == 0:
                    patched = await client.patch(f"/api/v1/{store}/{entity['_id']}", json={"n": -n})
                    acknowledged.append(
                        ("update", entity["_id"], int(patched.headers["etag"].strip('"')))
                    )
                if n % 10 == 0:
                    await client.delete(f"/api/v1/{store}/{entity['_id']}")
                    acknowledged.append(("delete", entity["_id"], 0))

        seen: list[tuple[str, str, int]] = []

        async def poller() -> None:
            nonlocal cursor
            while len(seen) < 40 * 2 + 10 * 2 + 4 * 2:
                page = await poll(admin, store, cursor, limit="7")
                seen.extend(
                    (c["op"], c["id"], c["rev"] if c["op"] != "delete" else 0)
                    for c in page["changes"]
                )
                cursor = page["next"]
                await asyncio.sleep(0.02)

        await asyncio.wait_for(
            asyncio.gather(writer(admin.client, "a"), writer(second, "b"), poller()), 60
        )
    assert sorted(seen) == sorted(acknowledged)  # every acknowledged write, once
    assert len(set(seen)) == len(seen)
    # In commit order: for each entity, its create, then update, then delete.
    order = {"create": 0, "update": 1, "delete": 2}
    positions: dict[str, list[int]] = {}
    for op, entity_id, _ in seen:
        positions.setdefault(entity_id, []).append(order[op])
    assert all(p == sorted(p) for p in positions.values())
