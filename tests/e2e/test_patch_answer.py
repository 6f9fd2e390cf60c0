"""What a PATCH answers, and what it asks the database for: a first attempt guarded by the
entity's revision answers with the entity as that write left it (a read and an update, no read
back); a path through an array, or a write that lost the race, reads the entity back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo import monitoring
from starlette.applications import Starlette

from app.entities import Entities
from tests.e2e.conftest import bearer_client, make_settings
from tests.e2e.live import ADMIN_PASSWORD
from tests.e2e.support import raw_database, running
from tests.helpers import unique

pytestmark = pytest.mark.asyncio


class StoreCommands(monitoring.CommandListener):
    """The commands sent to one collection, in order."""

    def __init__(self) -> None:
        self.collection = ""
        self.names: list[str] = []
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.collection and event.command.get(event.command_name) == self.collection:
            with self._lock:
                self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture(scope="module")
def commands() -> StoreCommands:
    listener = StoreCommands()
    monitoring.register(listener)  # for clients made from now on: the app's below
    return listener


@pytest.fixture(scope="module")
async def counted_app(
    commands: StoreCommands, mongodb_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Starlette]:
    data: Path = tmp_path_factory.mktemp("patch")
    async with running(make_settings(mongodb_url, data)) as app:
        yield app
    commands.collection = ""  # registered for good: let it count nothing from now on


async def _made(client: Any, store: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/api/v1/{store}", json=body)
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


STORED = {
    "name": "Ada",
    "address": {"city": "London", "geo": {"lat": 51.5}},
    "tags": ["a", "b"],
    "rows": [{"x": 1}, {"x": 2}],
    "score": 1.5,
}

EXACT = [
    {"name": "Grace"},
    {"address.city": "Paris", "address.geo.lng": -0.1, "added": {"deep": [1, {"n": None}]}},
    {"brand.new.path": "made as objects", "tags": ["c"], "count": 2**40, "ratio": -0.0},
    {"address": "now a string", "name": None, "text": "ünïcödé ✓ \U0001f600"},
    {"0": "a numeric name", "address.7": "a numeric name in an object"},
]
READ_BACK = [
    {"tags.1": "B"},
    {"tags.5": "padded with nulls"},
    {"rows.0.x": 10, "name": "mixed"},
]


@pytest.mark.parametrize(("body", "reads"), [(b, 1) for b in EXACT] + [(b, 2) for b in READ_BACK])
async def test_a_patch_answers_what_a_later_read_shows(
    counted_app: Starlette, commands: StoreCommands, body: dict[str, Any], reads: int
) -> None:
    store = unique("answer")
    async with await bearer_client(counted_app, "admin", ADMIN_PASSWORD) as admin:
        made = await _made(admin, store, STORED)
        commands.collection, commands.names = store, []
        patched = await admin.patch(f"/api/v1/{store}/{made['_id']}", json=body)
        sent = list(commands.names)
        commands.collection = ""
        assert patched.status_code == 200, patched.text
        read = await admin.get(f"/api/v1/{store}/{made['_id']}")
    assert patched.json() == read.json()
    assert patched.headers["etag"] == read.headers["etag"] == '"2"'
    assert sent == ["find", "update", *["find"] * (reads - 1)]


async def test_a_patch_that_another_write_overtook_reads_the_entity_back(
    counted_app: Starlette,
    commands: StoreCommands,
    mongodb_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another write lands between the PATCH's read and its update: the revision-guarded
    update matches nothing, and the next attempt (unguarded) answers with the entity read
    back, the other write included."""
    store = unique("race")
    reads = 0
    original = Entities._writable

    async def overtaken(self: Entities, name: str, entity_id: ObjectId, user: Any) -> Any:
        nonlocal reads
        found = await original(self, name, entity_id, user)
        reads += 1
        if reads == 1:
            async with raw_database(mongodb_url) as db:
                await db[name].update_one(
                    {"_id": entity_id}, {"$set": {"other": "write"}, "$inc": {"_rev": 1}}
                )
        return found

    async with await bearer_client(counted_app, "admin", ADMIN_PASSWORD) as admin:
        made = await _made(admin, store, STORED)
        monkeypatch.setattr(Entities, "_writable", overtaken)
        commands.collection, commands.names = store, []
        # The same size as "Ada": a write that grows the entity is guarded by its revision on
        # every attempt, and so answers without a read back on every attempt.
        patched = await admin.patch(f"/api/v1/{store}/{made['_id']}", json={"name": "Bob"})
        sent = list(commands.names)
        commands.collection = ""
        monkeypatch.undo()
        read = await admin.get(f"/api/v1/{store}/{made['_id']}")
    assert patched.status_code == 200, patched.text
    assert patched.json()["other"] == "write" and patched.json()["name"] == "Bob"
    assert patched.json() == read.json() and patched.headers["etag"] == '"3"'
    # Read, the other write, the guarded update (no match), read again, update, read back.
    assert sent == ["find", "update", "update", "find", "update", "find"], sent


async def test_concurrent_patches_of_one_entity_all_land(counted_app: Starlette) -> None:
    """Twenty PATCHes of different fields at once: the ones whose guarded first attempt lost
    the race write again unguarded, so none is refused and every field is there. (The
    entity does not grow: a growing write stays guarded by the revision on every attempt.)"""
    store = unique("crowd")
    async with await bearer_client(counted_app, "admin", ADMIN_PASSWORD) as admin:
        made = await _made(admin, store, {f"f{i}": -1 for i in range(20)})
        url = f"/api/v1/{store}/{made['_id']}"
        answers = await asyncio.gather(*(admin.patch(url, json={f"f{i}": i}) for i in range(20)))
        assert [a.status_code for a in answers] == [200] * 20
        final = (await admin.get(url)).json()
    assert all(final[f"f{i}"] == i for i in range(20))
    assert final["_id"] == made["_id"]
    # Each answer shows its own write (one read back may show later ones too).
    assert all(a.json()[f"f{i}"] == i for i, a in enumerate(answers))
    assert max(int(a.headers["etag"].strip('"')) for a in answers) == 21
