"""Safe writes: revisions as ETags, If-None-Match, If-Match (checked inside the write)."""

from __future__ import annotations

import asyncio

import pytest

from app import idempotency
from tests.e2e.sockets import listening, token_of
from tests.helpers import assert_api_error

pytestmark = pytest.mark.asyncio


async def test_every_single_entity_answer_carries_its_revision(admin, store):
    created = await admin.post(f"/api/v1/{store}", json={"a": 1})
    assert created.headers["etag"] == '"1"' and "_rev" not in created.json()
    assert "_by" not in created.json()
    url = created.headers["location"]
    assert (await admin.get(url)).headers["etag"] == '"1"'
    assert (await admin.get(url, params={"only": "a"})).headers["etag"] == '"1"'
    assert (await admin.get(url, params={"only": "-a"})).headers["etag"] == '"1"'
    patched = await admin.patch(url, json={"a": 2})
    assert patched.headers["etag"] == '"2"' and "_rev" not in patched.json()
    assert "_by" not in patched.json() and "_by" not in (await admin.get(url)).json()
    access = await admin.put(f"{url}/access", json={"access": ["*"]})
    assert access.headers["etag"] == '"3"'
    listed = (await admin.get(f"/api/v1/{store}")).json()
    assert "_rev" not in listed[0]


async def test_if_none_match_answers_304_while_unchanged(admin, store):
    url = (await admin.post(f"/api/v1/{store}", json={"a": 1})).headers["location"]
    same = await admin.get(url, headers={"If-None-Match": '"1"'})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == '"1"'
    assert (await admin.get(url, headers={"If-None-Match": "*"})).status_code == 304
    await admin.patch(url, json={"a": 2})
    changed = await admin.get(url, headers={"If-None-Match": '"1"'})
    assert changed.status_code == 200 and changed.json()["a"] == 2


async def test_if_match_guards_patch_access_and_delete(admin, store):
    url = (await admin.post(f"/api/v1/{store}", json={"a": 1})).headers["location"]
    assert (await admin.patch(url, json={"a": 2}, headers={"If-Match": '"1"'})).status_code == 200
    stale = await admin.patch(url, json={"a": 3}, headers={"If-Match": '"1"'})
    body = assert_api_error(stale, 412, "PRECONDITION_FAILED")
    assert body["current"]["a"] == 2 and "_rev" not in body["current"]
    assert "_readers" not in body["current"] and body["current"]["_id"] == url.rsplit("/", 1)[1]
    assert (await admin.get(url)).json()["a"] == 2
    assert (await admin.patch(url, json={"a": 4}, headers={"If-Match": "*"})).status_code == 200
    access = await admin.put(f"{url}/access", json={"branch": ["x"]}, headers={"If-Match": '"2"'})
    assert_api_error(access, 412, "PRECONDITION_FAILED")
    access = await admin.put(f"{url}/access", json={"branch": ["x"]}, headers={"If-Match": '"3"'})
    assert access.status_code == 200 and access.headers["etag"] == '"4"'
    assert_api_error(
        await admin.delete(url, headers={"If-Match": '"3"'}), 412, "PRECONDITION_FAILED"
    )
    assert (await admin.get(url)).status_code == 200
    assert (await admin.delete(url, headers={"If-Match": '"4"'})).status_code == 200
    assert_api_error(await admin.delete(url, headers={"If-Match": "*"}), 404, "NOT_FOUND")
    # A negative revision is a tag (another program may store one); these are not.
    for bad in ('"1", "2"', 'W/"1"', "abc", '"--1"', '"1-"', '"12345678901234567890"'):
        assert_api_error(
            await admin.patch(url, json={"a": 1}, headers={"If-Match": bad}), 400, "INVALID"
        )


async def test_two_patches_with_one_if_match_exactly_one_wins(admin, store):
    for _ in range(5):
        url = (await admin.post(f"/api/v1/{store}", json={"n": 0})).headers["location"]
        results = await asyncio.gather(
            *(admin.patch(url, json={"n": n}, headers={"If-Match": '"1"'}) for n in (1, 2))
        )
        assert sorted(r.status_code for r in results) == [200, 412], [r.text for r in results]
        winner = next(r for r in results if r.status_code == 200).json()["n"]
        assert (await admin.get(url)).json()["n"] == winner


async def test_events_carry_the_revision(live, make_user, store):
    user = await make_user()
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        await socket.subscribe(store=store)
        created = await user.post(f"/api/v1/{store}", json={"a": 1})
        assert (await socket.next())["rev"] == 1
        patched = await user.patch(created.headers["location"], json={"a": 2})
        event = await socket.next()
        assert event["rev"] == 2 and patched.headers["etag"] == f'"{event["rev"]}"'
        await user.delete(created.headers["location"], headers={"If-Match": '"2"'})
        event = await socket.next()
        assert event["op"] == "delete" and event["rev"] == 2


async def count(user, store) -> int:
    return int((await user.get(f"/api/v1/{store}?meta=true")).json()["count"])


async def test_a_repeated_key_replays_the_first_answer(admin, make_user, store):
    user = await make_user()
    key = {"Idempotency-Key": "order-4711"}
    first = await user.post(f"/api/v1/{store}", json={"n": 1}, headers=key)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = await user.post(f"/api/v1/{store}", json={"n": 1}, headers=key)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json() and again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == first.headers["etag"]
    assert await count(user, store) == 1
    # Keys are per user: another user's same key is a request of its own.
    other = await admin.post(f"/api/v1/{store}", json={"n": 1}, headers=key)
    assert other.status_code == 201 and "idempotent-replayed" not in other.headers
    mismatch = await user.post(f"/api/v1/{store}", json={"n": 2}, headers=key)
    assert_api_error(mismatch, 422, "IDEMPOTENCY_KEY_REUSED")
    elsewhere = await user.post(f"/api/v1/{store}x", json={"n": 1}, headers=key)
    assert_api_error(elsewhere, 422, "IDEMPOTENCY_KEY_REUSED")
    for bad in ("", "x" * 256, "tab\there"):
        response = await user.post(
            f"/api/v1/{store}", json={"n": 1}, headers={"Idempotency-Key": bad}
        )
        assert_api_error(response, 400, "INVALID")
    assert await count(user, store) == 1


async def test_validation_answers_are_kept_and_failures_are_not(admin, store):
    definition = {"schema": {"type": "object", "required": ["title"]}}
    assert (await admin.put(f"/api/v1/_stores/{store}", json=definition)).status_code == 200
    key = {"Idempotency-Key": "bad-body"}
    refused = await admin.post(f"/api/v1/{store}", json={"n": 1}, headers=key)
    assert_api_error(refused, 400, "INVALID")
    replayed = await admin.post(f"/api/v1/{store}", json={"n": 1}, headers=key)
    assert replayed.status_code == 400 and replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json()["errors"] == refused.json()["errors"]


async def test_concurrent_repeats_write_once(admin, store):
    key = {"Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(admin.post(f"/api/v1/{store}", json={"n": 1}, headers=key) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409} and statuses.count(201) >= 1, statuses
    fresh = [
        r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
    ]
    assert len(fresh) == 1
    for response in responses:
        if response.status_code == 409:
            assert "still running" in response.json()["message"]
    assert await count(admin, store) == 1


async def test_keys_hold_across_instances_and_restarts(admin, settings, store, tmp_path):
    from tests.e2e.conftest import client_for
    from tests.e2e.support import running

    key = {"Idempotency-Key": "across"}
    first = await admin.post(f"/api/v1/{store}", json={"n": 1}, headers=key)
    for _ in range(2):  # a second instance, then a restarted one: both replay
        async with running(settings) as other, client_for(other) as client:
            client.headers["Authorization"] = admin.client.headers["Authorization"]
            again = await client.post(f"/api/v1/{store}", json={"n": 1}, headers=key)
            assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
            assert again.json()["_id"] == first.json()["_id"]
    assert await count(admin, store) == 1


async def test_a_key_left_running_by_a_dead_request_is_taken_over(app, admin, store):
    import hashlib
    from datetime import timedelta

    from app.clock import now
    from app.idempotency import fingerprint

    me = (await admin.get("/api/v1/_me")).json()
    key_id = hashlib.sha256(f"{me['id']}\0stuck".encode()).hexdigest()
    printed = fingerprint(f"POST /api/v1/{store}", {"n": 1})
    keys = app.state.services.storage.system("_idempotency")
    base = {
        "_id": key_id,
        "fingerprint": printed,
        "state": "running",
        "expiresAt": now() + timedelta(hours=1),
    }
    await keys.insert_one({**base, "lease": now() + timedelta(seconds=30)})
    busy = await admin.post(f"/api/v1/{store}", json={"n": 1}, headers={"Idempotency-Key": "stuck"})
    assert_api_error(busy, 409, "CONFLICT")
    await keys.update_one({"_id": key_id}, {"$set": {"lease": now() - timedelta(seconds=1)}})
    taken = await admin.post(
        f"/api/v1/{store}", json={"n": 1}, headers={"Idempotency-Key": "stuck"}
    )
    assert taken.status_code == 201 and "idempotent-replayed" not in taken.headers
    assert await count(admin, store) == 1


async def test_a_done_request_whose_answer_was_too_large_is_not_run_again(
    make_user, store, monkeypatch
):
    """An answer too large to keep (12 MiB; a few hundred bytes here) used to free the key,
    so a retried _bulk made every entity twice."""
    monkeypatch.setattr(idempotency, "_MAX_STORED", 500)
    user = await make_user()
    key = {"Idempotency-Key": "large-answer"}
    bulk = {
        "operations": [{"op": "create", "entity": {"n": n, "pad": "x" * 50}} for n in range(10)]
    }
    first = await user.post(f"/api/v1/{store}/_bulk", json=bulk, headers=key)
    assert first.status_code == 200, first.text
    assert len(first.content) > 500
    for _ in range(2):
        again = await user.post(f"/api/v1/{store}/_bulk", json=bulk, headers=key)
        assert "too large to keep" in assert_api_error(again, 409, "CONFLICT")["message"]
    count = (await user.get(f"/api/v1/{store}", params={"meta": "true"})).json()["count"]
    assert count == 10


async def test_a_body_too_deep_to_fingerprint_is_refused_like_any_other(make_user, store):
    user = await make_user()
    deep: object = 1
    for _ in range(300):
        deep = {"a": deep}
    key = {"Idempotency-Key": "deep"}
    bulk = {"operations": [{"op": "create", "entity": {"v": deep}}]}
    for path, body in ((f"/api/v1/{store}", {"v": deep}), (f"/api/v1/{store}/_bulk", bulk)):
        assert_api_error(await user.post(path, json=body, headers=key), 400, "INVALID")
