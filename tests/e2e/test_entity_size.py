"""``MAX_ENTITY_BYTES``: no write through the API leaves an entity larger than the limit, in
BSON as stored, whether it arrives whole (POST, bulk create) or grows a PATCH or an access
change at a time; concurrent writes cannot grow it past the limit together."""

from __future__ import annotations

import asyncio

import pytest
from bson import ObjectId, encode

from tests.e2e.conftest import make_settings
from tests.e2e.support import raw_database, running, token_client
from tests.e2e.support import token_for as sign_in_for_token
from tests.helpers import assert_api_error

pytestmark = pytest.mark.asyncio

LIMIT = 20_000


async def _stored_size(settings, store: str, entity_id: str) -> int:
    async with raw_database(settings.mongodb_url, settings.mongodb_db) as db:
        found = await db[store].find_one({"_id": ObjectId(entity_id)})
    assert found is not None
    return len(encode(found))


async def test_no_write_leaves_an_entity_past_max_entity_bytes(
    app, admin, store, mongodb_url, tmp_path
):
    limited = make_settings(mongodb_url, tmp_path, MAX_ENTITY_BYTES=str(LIMIT))
    token = await sign_in_for_token(app, admin.login, admin.password)
    async with running(limited) as served, token_client(served, token) as api:
        # Whole: a body under MAX_BODY_BYTES whose entity is over the limit.
        refused = await api.post(f"/api/v1/{store}", json={"blob": "x" * LIMIT})
        assert_api_error(refused, 413, "TOO_LARGE")
        assert "MAX_ENTITY_BYTES" in refused.json()["message"]
        assert (await api.get(f"/api/v1/{store}")).json() == []

        made = (await api.post(f"/api/v1/{store}", json={"a": "x" * 8000})).json()
        path = f"/api/v1/{store}/{made['_id']}"
        # Grown a PATCH at a time: the one that would cross the limit is refused.
        assert (await api.patch(path, json={"b": "y" * 8000})).status_code == 200
        grown = await api.patch(path, json={"c": "z" * 8000})
        assert_api_error(grown, 413, "TOO_LARGE")
        assert "c" not in (await api.get(path)).json()
        # Dotted paths count as what they become.
        nested = await api.patch(path, json={"d.e.f": "w" * 8000})
        assert_api_error(nested, 413, "TOO_LARGE")
        # A write that shrinks or keeps the size is fine, however close to the limit.
        assert (await api.patch(path, json={"b": "short"})).status_code == 200
        # The access fields count too (the hidden reader keys grow with them).
        assert (await api.patch(path, json={"b": "y" * 10_000})).status_code == 200
        access = await api.put(f"{path}/access", json={"access": [f"u{n:04}" for n in range(900)]})
        assert_api_error(access, 413, "TOO_LARGE")
        assert (await api.get(path)).json()["access"] == []
        assert await _stored_size(limited, store, made["_id"]) <= LIMIT

        # Bulk creates are checked one by one.
        answer = await api.post(
            f"/api/v1/{store}/_bulk",
            json={"operations": [
                {"op": "create", "entity": {"n": 1}},
                {"op": "create", "entity": {"blob": "x" * LIMIT}},
            ], "ordered": False},
        )  # fmt: skip
        results = answer.json()["results"]
        assert [r["status"] for r in results] == [201, 413]
        assert results[1]["error"]["error"] == "TOO_LARGE"


async def test_concurrent_patches_cannot_grow_an_entity_past_the_limit_together(
    app, admin, store, mongodb_url, tmp_path
):
    limited = make_settings(mongodb_url, tmp_path, MAX_ENTITY_BYTES=str(LIMIT))
    token = await sign_in_for_token(app, admin.login, admin.password)
    async with running(limited) as served, token_client(served, token) as api:
        made = (await api.post(f"/api/v1/{store}", json={"n": 0})).json()
        path = f"/api/v1/{store}/{made['_id']}"
        # Each alone fits; all ten together would be about 3x the limit.
        answers = await asyncio.gather(
            *(api.patch(path, json={f"f{n}": "x" * 6000}) for n in range(10))
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(200) >= 1
        assert set(statuses) <= {200, 409, 413}
        assert await _stored_size(limited, store, made["_id"]) <= LIMIT
        kept = [k for k in (await api.get(path)).json() if k.startswith("f")]
        assert len(kept) == statuses.count(200) <= 3
