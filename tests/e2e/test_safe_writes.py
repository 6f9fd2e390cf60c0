"""Safe writes: revisions as ETags, If-None-Match, If-Match (checked inside the write)."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.sockets import listening, token_of
from tests.helpers import assert_api_error

pytestmark = pytest.mark.asyncio


async def test_every_single_entity_answer_carries_its_revision(admin, store):
    created = await admin.post(f"/api/v1/{store}", json={"a": 1})
    assert created.headers["etag"] == '"1"' and "_rev" not in created.json()
    url = created.headers["location"]
    assert (await admin.get(url)).headers["etag"] == '"1"'
    assert (await admin.get(url, params={"only": "a"})).headers["etag"] == '"1"'
    assert (await admin.get(url, params={"only": "-a"})).headers["etag"] == '"1"'
    patched = await admin.patch(url, json={"a": 2})
    assert patched.headers["etag"] == '"2"' and "_rev" not in patched.json()
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
    for bad in ('"1", "2"', 'W/"1"', "abc", '"-1"'):
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
