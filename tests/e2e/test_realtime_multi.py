"""Realtime across server instances on one database: a separate ``python -m app`` process and
the in-test live server see each other's writes (and writes made straight in the database),
and ending a token or session through another instance closes the sockets that use it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import socketio
from bson import ObjectId

from app import acl
from tests.e2e.conftest import ADMIN_PASSWORD, make_settings
from tests.e2e.live import server_process
from tests.e2e.sockets import WAIT, listening, token_of
from tests.e2e.support import cookie_client, raw_database, sign_in

pytestmark = pytest.mark.asyncio

REVOKED_WITHIN = 5.0


@pytest.fixture(scope="module")
async def process_url(mongodb_url, tmp_path_factory) -> AsyncIterator[str]:
    """A second server, as its own OS process, on the same database and secret as ``live``."""
    tmp = tmp_path_factory.mktemp("process")
    env = {
        "MONGODB_URL": mongodb_url,
        "MONGODB_DB": "e2e",
        "APP_SECRET": make_settings(mongodb_url, tmp).app_secret,
        "DATA_DIR": str(tmp / "data"),
        "APP_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    async with server_process(env, tmp / "server.log") as url:
        yield url


@pytest.fixture
def urls(live, process_url) -> dict[str, str]:
    return {"live": live.url, "process": process_url}


@pytest.mark.parametrize(("listen_on", "write_through"), [("process", "live"), ("live", "process")])
async def test_a_write_through_one_server_reaches_a_subscriber_on_the_other(
    urls, make_user, store, listen_on, write_through
):
    user = await make_user()
    token = token_of(user)
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        listening(urls[listen_on], auth={"token": token}) as socket,
        httpx.AsyncClient(base_url=urls[write_through], headers=headers, timeout=WAIT) as http,
    ):
        ack = await socket.subscribe(store=store)
        assert ack["success"] is True
        response = await http.post(f"/api/v1/{store}", json={"via": write_through})
        assert response.status_code == 201, response.text
        made = response.json()
        event = await socket.next()
        assert (event["op"], event["id"], event["store"]) == ("create", made["_id"], store)
        assert event["subscription"] == ack["subscription"] and event["entity"] == made

        patched = (await http.patch(f"/api/v1/{store}/{made['_id']}", json={"n": 2})).json()
        event = await socket.next()
        assert (event["op"], event["entity"]) == ("update", patched)
        await socket.nothing()


def _direct_document(owner: str, group: str) -> dict[str, Any]:
    """An entity as the API would store it, ``_readers`` included."""
    moment = datetime.now(UTC).replace(microsecond=0)
    return {
        "_id": ObjectId(),
        "name": "written by pymongo",
        "owner": owner,
        "group": group,
        "access": [],
        "branch": [],
        "createdAt": moment,
        "updatedAt": moment,
        acl.READERS: acl.readers_of(owner, group, [], []),
    }


async def test_a_write_made_in_the_database_reaches_subscribers_everywhere(
    urls, mongodb_url, make_user, store
):
    user = await make_user(groups=["crew"])
    token = token_of(user)
    document = _direct_document(user.id, "crew")
    entity_id = str(document["_id"])
    async with (
        listening(urls["live"], auth={"token": token}) as on_live,
        listening(urls["process"], auth={"token": token}) as on_process,
        raw_database(mongodb_url) as db,
    ):
        for socket in (on_live, on_process):
            assert (await socket.subscribe(store=store))["success"] is True
        await db[store].insert_one(document)
        shown = (await user.get(f"/api/v1/{store}/{entity_id}")).json()
        assert acl.READERS not in shown and shown["name"] == "written by pymongo"
        for socket in (on_live, on_process):
            event = await socket.next()
            assert (event["op"], event["id"]) == ("create", entity_id)
            assert event["entity"] == shown

        await db[store].update_one({"_id": document["_id"]}, {"$set": {"name": "renamed"}})
        shown = (await user.get(f"/api/v1/{store}/{entity_id}")).json()
        for socket in (on_live, on_process):
            event = await socket.next()
            assert (event["op"], event["entity"]) == ("update", shown)
            assert event["entity"]["name"] == "renamed"


async def test_a_delete_made_in_the_database_reaches_subscribers(
    live, mongodb_url, make_user, store
):
    user = await make_user(groups=["crew"])
    document = _direct_document(user.id, "crew")
    async with (
        listening(live.url, auth={"token": token_of(user)}) as socket,
        raw_database(mongodb_url) as db,
    ):
        assert (await socket.subscribe(store=store))["success"] is True
        await user.post(f"/api/v1/{store}", json={"made": "through the API first"})
        assert (await socket.next())["op"] == "create"
        await db[store].insert_one(document)
        assert (await socket.next())["op"] == "create"
        await db[store].delete_one({"_id": document["_id"]})
        event = await socket.next()
        assert (event["op"], event["id"]) == ("delete", str(document["_id"]))


async def test_a_store_made_outside_the_api_gets_pre_images_so_deletes_reach_readers(
    live, admin, mongodb_url, make_user, store
):
    """The first change seen in a collection made by a direct insert (no pre-images) makes the
    server prepare it; from then on its deletes reach whoever could read the entity."""
    user = await make_user(groups=["crew"])
    document = _direct_document(user.id, "crew")
    async with (
        listening(live.url, auth={"token": token_of(user)}) as owner,
        listening(live.url, auth={"token": token_of(admin)}) as administrator,
        raw_database(mongodb_url) as db,
    ):
        for socket in (owner, administrator):
            assert (await socket.subscribe(store=store))["success"] is True
        await db[store].insert_one(document)  # creates the collection, without pre-images
        for socket in (owner, administrator):
            assert (await socket.next())["op"] == "create"
        for _ in range(50):
            found = await (await db.list_collections(filter={"name": store})).to_list()
            if found[0]["options"].get("changeStreamPreAndPostImages", {}).get("enabled"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("pre-images were never turned on")
        await db[store].delete_one({"_id": document["_id"]})
        for socket in (owner, administrator):
            event = await socket.next()
            assert (event["op"], event["id"]) == ("delete", str(document["_id"]))


async def _disconnected_after(socket, started: float) -> float:
    left = REVOKED_WITHIN - (time.monotonic() - started)
    try:
        await asyncio.wait_for(socket.disconnected.wait(), max(left, 0.01))
    except TimeoutError:
        raise AssertionError(f"socket still open {REVOKED_WITHIN} s after revocation") from None
    return time.monotonic() - started


async def test_revoking_a_personal_token_elsewhere_closes_its_socket(app, live, make_user, store):
    user = await make_user()
    made = (await user.post("/api/v1/_tokens", json={"name": "socket"})).json()
    async with listening(live.url, auth={"token": made["token"]}) as socket:
        assert (await socket.subscribe(store=store))["success"] is True
        started = time.monotonic()
        # ``user.client`` talks to the ``app`` instance, not to ``live``.
        response = await user.delete(f"/api/v1/_tokens/{made['id']}")
        assert response.status_code == 200, response.text
        await _disconnected_after(socket, started)

    refused = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(
            live.url, auth={"token": made["token"]}, transports=["websocket"], wait_timeout=WAIT
        )


@pytest.mark.parametrize("sign_out_on", ["app", "live"])
async def test_signing_out_closes_that_sessions_socket_only(
    app, live, make_user, store, sign_out_on
):
    user = await make_user()
    ending, staying = [await sign_in(app, user.login, user.password) for _ in range(2)]
    async with (
        listening(live.url, headers={"Cookie": f"sid={ending}"}) as closed,
        listening(live.url, headers={"Cookie": f"sid={staying}"}) as kept,
    ):
        for socket in (closed, kept):
            assert (await socket.subscribe(store=store))["success"] is True
        started = time.monotonic()
        json_type = {"Content-Type": "application/json"}  # cookie writes must be JSON
        if sign_out_on == "app":
            async with cookie_client(app, ending, headers=json_type) as browser:
                response = await browser.delete("/api/v1/auth")
        else:
            headers = {"Cookie": f"sid={ending}", **json_type}
            async with httpx.AsyncClient(base_url=live.url, headers=headers) as browser:
                response = await browser.delete("/api/v1/auth")
        assert response.status_code == 200, response.text
        await _disconnected_after(closed, started)

        assert kept.sio.connected and not kept.disconnected.is_set()
        made = (await user.post(f"/api/v1/{store}", json={"after": "sign-out"})).json()
        assert (await kept.next())["id"] == made["_id"]
