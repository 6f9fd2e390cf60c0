"""Entity history: one entry per change, newest first, with who made it."""

from __future__ import annotations

import asyncio
import time

import pytest
from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DocumentTooLarge

from app.history import History
from app.storage import HISTORY, Storage
from tests.e2e.support import raw_database, running
from tests.helpers import assert_api_error, unique

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


async def test_a_change_too_large_to_record_whole_is_recorded_without_its_values(
    admin, store, mongodb_url
):
    """A program writing straight to the database may store what the API refuses: an entry
    for it larger than the database takes loses its values, not the recorder (which once
    stopped for good on it, for every store)."""
    first = (await admin.post(f"/api/v1/{store}", json={"n": 0})).json()  # prepares the store
    async with raw_database(mongodb_url) as db:
        big = (await db[store].insert_one({"a": "x" * (9 << 20)})).inserted_id
        # Before and after together: 18 MiB, over the 16 MiB a document may hold.
        await db[store].update_one({"_id": big}, {"$set": {"a": "y" * (9 << 20), "b": 1}})
    after = (await admin.post(f"/api/v1/{store}", json={"n": 1})).json()
    assert (await history(admin, f"/api/v1/{store}/{after['_id']}", 1))[0]["op"] == "create"
    entries = await history(admin, f"/api/v1/{store}/{big}", 2)
    assert [e["op"] for e in entries] == ["update", "create"]
    update, create = entries
    assert update["changes"] == {} and update["omitted"] == ["a", "b"]
    assert create["changes"]["a"]["to"] == "x" * (9 << 20)  # 9 MiB fits: kept whole
    assert "omitted" not in create
    assert len(await history(admin, f"/api/v1/{store}/{first['_id']}", 1)) == 1


async def test_an_entry_the_driver_refuses_as_too_large_is_stored_slimmed(settings, monkeypatch):
    """Where the driver, not the database, refuses an entry over the document limit (before
    sending the batch), the batch is written again with that entry slimmed."""
    storage = Storage(settings.mongodb_url, unique("slim"))
    recorder = History(storage)
    real = AsyncCollection.insert_many
    refused: list[int] = []

    async def insert_many(self, documents, *args, **kwargs):
        documents = list(documents)
        if any(len(str(d.get("changes"))) > 1000 for d in documents):
            refused.append(len(documents))
            raise DocumentTooLarge("BSON document too large")  # what the driver raises
        return await real(self, documents, *args, **kwargs)

    monkeypatch.setattr(AsyncCollection, "insert_many", insert_many)
    monkeypatch.setattr("app.history._MOST_BYTES", 1000)
    small = {"_id": "a", "store": "s", "entity": 1, "changes": {"n": {"from": 1, "to": 2}}}
    large = {
        "_id": "b",
        "store": "s",
        "entity": 2,
        "changes": {"t": {"from": None, "to": "x" * 2000}},
    }
    try:
        assert await recorder._write_batch([small, large]) is True
        assert refused == [2]
        stored = {e["_id"]: e async for e in storage.system(HISTORY).find({})}
        assert stored["a"]["changes"] == small["changes"] and "omitted" not in stored["a"]
        assert stored["b"]["changes"] == {} and stored["b"]["omitted"] == ["t"]
    finally:
        await storage.client.drop_database(storage.db.name)
        await storage.close()
