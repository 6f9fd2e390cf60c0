"""Entity history: one entry per change, newest first, with who made it."""

from __future__ import annotations

import asyncio
import time

import pytest
from bson import ObjectId

from tests.e2e.support import raw_database, running
from tests.helpers import assert_api_error

pytestmark = pytest.mark.asyncio


async def history(user, url: str, wanted: int) -> list[dict]:
    """The history once it has ``wanted`` entries (it is recorded in the background)."""
    deadline = time.monotonic() + 10
    while True:
        response = await user.get(f"{url}/_history")
        assert response.status_code == 200, response.text
        if len(response.json()) >= wanted or time.monotonic() > deadline:
            return list(response.json())
        await asyncio.sleep(0.1)


async def test_every_change_is_one_entry_with_its_author(
    admin, make_user, store, settings, mongodb_url, live
):
    owner = await make_user(groups=["sales"])
    reader = await make_user()
    async with running(settings):  # a third process following the same stream
        made = (await owner.post(f"/api/v1/{store}", json={"stage": "new", "n": 1})).json()
        url = f"/api/v1/{store}/{made['_id']}"
        await owner.patch(url, json={"stage": "won"})
        await admin.put(f"{url}/access", json={"access": [reader.id]})
        async with raw_database(mongodb_url) as db:  # a change made straight in the database
            await db[store].update_one({"_id": ObjectId(made["_id"])}, {"$set": {"n": 2}})
        entries = await history(reader, url, 4)
        await asyncio.sleep(0.5)
        assert len(await history(reader, url, 4)) == 4  # once each, however many recorders
    assert [e["op"] for e in entries] == ["update", "update", "update", "create"]
    direct, access, patch, create = entries
    assert direct["by"] is None and direct["changes"] == {"n": {"from": 1, "to": 2}}
    assert access["by"] == admin.id and access["rev"] == 3
    assert access["changes"]["access"] == {"from": [], "to": [reader.id]}
    assert patch["by"] == owner.id and patch["rev"] == 2
    assert patch["changes"] == {"stage": {"from": "new", "to": "won"}}
    assert create["by"] == owner.id and create["rev"] == 1
    assert create["changes"]["stage"] == {"from": None, "to": "new"}
    assert all("_rev" not in e["changes"] and "_by" not in e["changes"] for e in entries)
    assert entries[0]["at"] >= entries[-1]["at"]

    await owner.delete(url)
    after = await history(admin, url, 5)
    assert after[0]["op"] == "delete" and after[0]["by"] == owner.id and after[0]["rev"] == 3
    assert_api_error(await reader.get(f"{url}/_history"), 404, "NOT_FOUND")
    outsider = await make_user()
    other = (await owner.post(f"/api/v1/{store}", json={"n": 1})).json()
    assert_api_error(
        await outsider.get(f"/api/v1/{store}/{other['_id']}/_history"), 404, "NOT_FOUND"
    )
