"""``POST /:store/_bulk``: many operations, each answered as its own endpoint answers."""

from __future__ import annotations

import pytest

from tests.e2e.sockets import listening, token_of
from tests.helpers import assert_api_error

pytestmark = pytest.mark.asyncio


async def bulk(user, store, operations, ordered=True, **kw):
    response = await user.post(
        f"/api/v1/{store}/_bulk", json={"operations": operations, "ordered": ordered}, **kw
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_mixed_operations_in_order(make_user, store):
    user = await make_user()
    first = (await user.post(f"/api/v1/{store}", json={"n": 1})).json()
    second = (await user.post(f"/api/v1/{store}", json={"n": 2})).json()
    answer = await bulk(user, store, [
        {"op": "create", "entity": {"n": 3}},
        {"op": "patch", "id": first["_id"], "changes": {"n": 10}, "ifMatch": "1"},
        {"op": "access", "id": first["_id"], "changes": {"access": ["*"]}},
        {"op": "delete", "id": second["_id"]},
        {"op": "create", "entity": {"n": 4}},
    ])  # fmt: skip
    assert answer["success"] is True
    statuses = [r["status"] for r in answer["results"]]
    assert statuses == [201, 200, 200, 200, 201]
    made = answer["results"][0]
    assert made["entity"]["n"] == 3 and made["rev"] == 1 and "_rev" not in made["entity"]
    assert (await user.get(f"/api/v1/{store}/{made['id']}")).json() == made["entity"]
    assert answer["results"][1]["entity"]["n"] == 10 and answer["results"][1]["rev"] == 2
    assert answer["results"][2]["entity"]["access"] == ["*"]
    assert (await user.get(f"/api/v1/{store}/{second['_id']}")).status_code == 404
    assert [e["n"] for e in (await user.get(f"/api/v1/{store}")).json()] == [10, 3, 4]


async def test_ordered_stops_at_the_first_failure_and_unordered_goes_on(admin, make_user, store):
    user = await make_user()
    theirs = (await admin.post(f"/api/v1/{store}", json={"secret": 1})).json()
    readable = (await admin.post(f"/api/v1/{store}", json={"shared": 1, "access": ["*"]})).json()
    operations = [
        {"op": "create", "entity": {"n": 1}},
        {"op": "create", "entity": {"$bad": 1}},
        {"op": "patch", "id": theirs["_id"], "changes": {"n": 2}},
        {"op": "patch", "id": readable["_id"], "changes": {"n": 2}},
        {"op": "delete", "id": "nope"},
        {"op": "explode"},
        {"op": "create", "entity": {"n": 5}},
    ]
    ordered = await bulk(user, store, operations)
    assert ordered["success"] is False
    assert [r["status"] for r in ordered["results"]] == [201, 400, None, None, None, None, None]
    assert ordered["results"][1]["error"]["error"] == "INVALID"
    assert ordered["results"][2] == {"status": None, "attempted": False}
    unordered = await bulk(user, store, operations, ordered=False)
    assert [r["status"] for r in unordered["results"]] == [201, 400, 404, 403, 400, 400, 201]
    assert unordered["results"][3]["error"]["error"] == "FORBIDDEN"
    assert unordered["results"][2]["id"] == theirs["_id"]
    assert (await admin.get(f"/api/v1/{store}/{theirs['_id']}")).json().get("n") is None
    mine = [e.get("n") for e in (await user.get(f"/api/v1/{store}")).json() if "n" in e]
    assert mine == [1, 1, 5]


async def test_bulk_follows_definitions_and_revisions(admin, store):
    definition = {
        "schema": {
            "type": "object",
            "required": ["sku"],
            "properties": {"sku": {"type": "string"}},
        },
        "unique": ["sku"],
    }
    assert (await admin.put(f"/api/v1/_stores/{store}", json=definition)).status_code == 200
    answer = await bulk(admin, store, [
        {"op": "create", "entity": {"sku": "a"}},
        {"op": "create", "entity": {"sku": "a"}},
        {"op": "create", "entity": {"name": "no sku"}},
        {"op": "create", "entity": {"sku": "b"}},
    ], ordered=False)  # fmt: skip
    results = answer["results"]
    assert [r["status"] for r in results] == [201, 409, 400, 201]
    assert "sku" in results[1]["error"]["message"]
    assert results[2]["error"]["errors"][0] == {
        "field": "sku", "rule": "required", "message": results[2]["error"]["errors"][0]["message"],
    }  # fmt: skip
    made = results[0]["id"]
    stale = await bulk(
        admin, store, [{"op": "patch", "id": made, "changes": {"x": 1}, "ifMatch": "7"}]
    )
    assert stale["results"][0]["status"] == 412
    assert stale["results"][0]["error"]["current"]["sku"] == "a"


async def test_a_thousand_creates_in_one_request(admin, store):
    operations = [{"op": "create", "entity": {"n": n}} for n in range(1000)]
    answer = await bulk(admin, store, operations)
    assert answer["success"] and len(answer["results"]) == 1000
    assert {r["status"] for r in answer["results"]} == {201}
    meta = (await admin.get(f"/api/v1/{store}?meta=true")).json()
    assert meta["count"] == 1000 and meta["first"]["n"] == 0 and meta["last"]["n"] == 999
    too_many = await admin.post(
        f"/api/v1/{store}/_bulk", json={"operations": [*operations, operations[0]]}
    )
    assert_api_error(too_many, 400, "INVALID")
    for body in (
        {"operations": []},
        {"operations": {}},
        {"ops": []},
        {"operations": [1], "ordered": 1},
    ):
        assert_api_error(await admin.post(f"/api/v1/{store}/_bulk", json=body), 400, "INVALID")


async def test_each_operation_makes_its_realtime_event(live, make_user, store):
    user = await make_user()
    made = (await user.post(f"/api/v1/{store}", json={"n": 0})).json()
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        await socket.subscribe(store=store)
        await bulk(user, store, [
            {"op": "create", "entity": {"n": 1}},
            {"op": "create", "entity": {"n": 2}},
            {"op": "patch", "id": made["_id"], "changes": {"n": 3}},
            {"op": "delete", "id": made["_id"]},
        ])  # fmt: skip
        events = [await socket.next() for _ in range(4)]
        assert [e["op"] for e in events] == ["create", "create", "update", "delete"]
        assert [e.get("entity", {}).get("n") for e in events[:3]] == [1, 2, 3]


async def test_a_repeated_bulk_with_its_key_runs_once(admin, store):
    key = {"Idempotency-Key": "nightly-import-1"}
    operations = [{"op": "create", "entity": {"n": n}} for n in range(5)]
    first = await bulk(admin, store, operations, headers=key)
    response = await admin.post(
        f"/api/v1/{store}/_bulk", json={"operations": operations, "ordered": True}, headers=key
    )
    assert response.headers["idempotent-replayed"] == "true" and response.json() == first
    assert (await admin.get(f"/api/v1/{store}?meta=true")).json()["count"] == 5
