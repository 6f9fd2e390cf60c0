"""Realtime with the real python-socketio client (EIO=4) against a live uvicorn server."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest
import socketio
from bson.timestamp import Timestamp

from app.realtime import sio as sio_module
from app.realtime.changes import Position, ResumeTokens
from tests.e2e.sockets import listening, token_of

pytestmark = pytest.mark.asyncio


async def test_token_subscriber_sees_create_update_delete(live, make_user, store):
    user = await make_user(groups=["g"])
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        ack = await socket.subscribe(store=store)
        assert ack["success"] is True and isinstance(ack["subscription"], str)
        made = (await user.post(f"/api/v1/{store}", json={"a": 1})).json()
        event = await socket.next()
        assert event["op"] == "create" and event["subscription"] == ack["subscription"]
        assert event["store"] == store and event["id"] == made["_id"]
        assert event["entity"] == made
        assert isinstance(event["ts"], int) and isinstance(event["resume"], str)

        patched = (await user.patch(f"/api/v1/{store}/{made['_id']}", json={"a": 2})).json()
        event = await socket.next()
        assert event["op"] == "update" and event["entity"] == patched

        await user.delete(f"/api/v1/{store}/{made['_id']}")
        event = await socket.next()
        assert event["op"] == "delete" and event["id"] == made["_id"]
        assert "entity" not in event


@pytest.mark.parametrize("transports", [["polling", "websocket"], ["websocket"]])
async def test_every_transport_gets_the_same_events(live, make_user, store, transports):
    """A session that starts with long-polling and upgrades is python-socketio's; a websocket
    opened directly is our own EIO=4 front (app/realtime/eio4.py). Both deliver alike."""
    user = await make_user()
    client = socketio.AsyncClient(reconnection=False)
    changes: asyncio.Queue = asyncio.Queue()
    client.on("change", changes.put_nowait)
    await client.connect(
        live.url, auth={"token": token_of(user)}, transports=transports, wait_timeout=5
    )
    try:
        ack = await client.call("subscribe", {"store": store}, timeout=5)
        assert ack["success"] is True
        made = (await user.post(f"/api/v1/{store}", json={"via": transports})).json()
        event = await asyncio.wait_for(changes.get(), 5)
        assert (event["op"], event["entity"], event["subscription"]) == (
            "create",
            made,
            ack["subscription"],
        )
        assert client.transport() == transports[-1]
    finally:
        await client.disconnect()


async def test_other_ways_to_authenticate(live, make_user, store):
    user = await make_user()
    token = token_of(user)
    async with httpx.AsyncClient(base_url=live.url) as http:
        login = {"login": user.login, "password": user.password}
        cookie = (await http.post("/api/v1/auth", json=login)).cookies["sid"]
    for connect in (
        {"headers": {"Cookie": f"sid={cookie}"}},
        {"headers": {"Authorization": f"Bearer {token}"}},
        {"auth": None, "headers": {}, "namespaces": ["/"], "socketio_path": "socket.io"},
    ):
        url = live.url if "auth" not in connect else f"{live.url}?token={token}"
        async with listening(url, **connect) as socket:
            assert (await socket.subscribe(store=store))["success"] is True


@pytest.mark.parametrize(
    "connect",
    [
        {},
        {"auth": {"token": "not-a-jwt"}},
        {"headers": {"Cookie": "sid=unknown-session"}},
        {"headers": {"Authorization": "Basic eDp5"}},
    ],
)
async def test_unauthenticated_sockets_are_refused(live, connect):
    client = socketio.AsyncClient(reconnection=False)
    refused: asyncio.Future = asyncio.get_running_loop().create_future()
    client.on("connect_error", lambda data: refused.done() or refused.set_result(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(live.url, transports=["websocket"], wait_timeout=5, **connect)
    data = await asyncio.wait_for(refused, 5)
    assert data["message"] == "Unauthorized"
    assert data["data"]["code"] == "401" and data["data"]["error"] == "UNAUTHORIZED"
    assert data["data"]["tags"] == ["error_unauthorized"]


async def test_nothing_arrives_from_what_the_user_cannot_read(live, make_user, store):
    owner, stranger = await make_user(groups=["team"]), await make_user(groups=["other"])
    async with listening(live.url, auth={"token": token_of(stranger)}) as socket:
        await socket.subscribe(store=store)
        made = (await owner.post(f"/api/v1/{store}", json={"secret": 1})).json()
        await owner.patch(f"/api/v1/{store}/{made['_id']}", json={"secret": 2})
        await owner.delete(f"/api/v1/{store}/{made['_id']}")
        await socket.nothing()
        # ...while a readable entity in the same store does arrive.
        shared = (await owner.post(f"/api/v1/{store}", json={"x": 1, "access": ["*"]})).json()
        event = await socket.next()
        assert event["id"] == shared["_id"] and event["op"] == "create"


async def test_access_changes_send_enter_and_leave(live, make_user, store):
    owner, watcher = await make_user(groups=["team"]), await make_user(groups=["viewers"])
    made = (await owner.post(f"/api/v1/{store}", json={"v": 1})).json()
    url = f"/api/v1/{store}/{made['_id']}"
    async with listening(live.url, auth={"token": token_of(watcher)}) as socket:
        await socket.subscribe(store=store)
        granted = (await owner.put(f"{url}/access", json={"access": ["viewers"]})).json()
        event = await socket.next()
        assert event["op"] == "enter" and event["entity"] == granted

        updated = (await owner.patch(url, json={"v": 2})).json()
        event = await socket.next()
        assert event["op"] == "update" and event["entity"] == updated

        await owner.put(f"{url}/access", json={"access": []})
        event = await socket.next()
        assert event["op"] == "leave" and "entity" not in event
        assert event["id"] == made["_id"]

        await owner.patch(url, json={"v": 3})
        await owner.delete(url)
        await socket.nothing()


async def test_only_projects_the_entity(live, make_user, store):
    user = await make_user()
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        await socket.subscribe(store=store, only="name,address.city")
        made = (
            await user.post(
                f"/api/v1/{store}",
                json={"name": "N", "secret": 1, "address": {"city": "C", "zip": 9}},
            )
        ).json()
        event = await socket.next()
        assert event["entity"] == {"_id": made["_id"], "name": "N", "address": {"city": "C"}}


async def test_entity_subscription_sees_only_that_entity(live, make_user, store):
    user = await make_user()
    one = (await user.post(f"/api/v1/{store}", json={"n": 1})).json()
    two = (await user.post(f"/api/v1/{store}", json={"n": 2})).json()
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        await socket.subscribe(store=store, id=one["_id"])
        await user.patch(f"/api/v1/{store}/{two['_id']}", json={"n": 20})
        await user.patch(f"/api/v1/{store}/{one['_id']}", json={"n": 10})
        event = await socket.next()
        assert event["id"] == one["_id"] and event["entity"]["n"] == 10
        await socket.nothing()


async def test_subscribe_errors_come_back_in_the_ack(live, make_user, store):
    owner, other = await make_user(groups=["a"]), await make_user(groups=["b"])
    hidden = (await owner.post(f"/api/v1/{store}", json={"n": 1})).json()
    async with listening(live.url, auth={"token": token_of(other)}) as socket:
        cases = [
            ({"store": "1bad"}, "400", "INVALID"),
            ({"store": "auth"}, "400", "INVALID"),
            ({}, "400", "INVALID"),
            ({"store": store, "id": "nope"}, "400", "INVALID"),
            ({"store": store, "only": "$where"}, "400", "INVALID"),
            ({"store": store, "bogus": 1}, "400", "INVALID"),
            ({"store": store, "resume": "garbage"}, "400", "INVALID"),
            ({"store": store, "id": hidden["_id"]}, "404", "NOT_FOUND"),
        ]
        for options, code, error in cases:
            ack = await socket.subscribe(**options)
            assert ack["success"] is False, options
            assert (ack["code"], ack["error"]) == (code, error), (options, ack)
        ack = await socket.sio.call("subscribe", "not-an-object", timeout=5)
        assert ack["error"] == "BAD_REQUEST"
        ack = await socket.sio.call("frobnicate", {}, timeout=5)
        assert ack["error"] == "NOT_FOUND"


async def test_unsubscribe_stops_events(live, make_user, store):
    user = await make_user()
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        ack = await socket.subscribe(store=store)
        done = await socket.sio.call(
            "unsubscribe", {"subscription": ack["subscription"]}, timeout=5
        )
        assert done == {"success": True}
        await user.post(f"/api/v1/{store}", json={"n": 1})
        await socket.nothing()
        again = await socket.sio.call(
            "unsubscribe", {"subscription": ack["subscription"]}, timeout=5
        )
        assert again["error"] == "NOT_FOUND"


async def test_subscriptions_per_socket_are_capped(live, make_user, store):
    user = await make_user()
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        for _ in range(100):
            assert (await socket.subscribe(store=store))["success"] is True
        ack = await socket.subscribe(store=store)
        assert ack["success"] is False and ack["error"] == "CONFLICT"
        assert "100" in ack["message"]


async def test_resume_delivers_exactly_the_missed_events_in_order(live, make_user, store):
    user = await make_user()
    token = token_of(user)
    async with listening(live.url, auth={"token": token}) as socket:
        await socket.subscribe(store=store)
        first = (await user.post(f"/api/v1/{store}", json={"n": 0})).json()
        last_seen = (await socket.next())["resume"]
    # Disconnected: these happen while nobody listens.
    missed = [(await user.post(f"/api/v1/{store}", json={"n": n})).json() for n in (1, 2, 3)]
    await user.patch(f"/api/v1/{store}/{first['_id']}", json={"n": 9})
    await user.delete(f"/api/v1/{store}/{missed[0]['_id']}")
    async with listening(live.url, auth={"token": token}) as socket:
        ack = await socket.subscribe(store=store, resume=last_seen)
        assert ack["success"] is True
        got = [await socket.next() for _ in range(5)]
        assert [(e["op"], e["id"]) for e in got] == [
            ("create", missed[0]["_id"]),
            ("create", missed[1]["_id"]),
            ("create", missed[2]["_id"]),
            ("update", first["_id"]),
            ("delete", missed[0]["_id"]),
        ]
        assert all(e["subscription"] == ack["subscription"] for e in got)
        assert got[3]["entity"]["n"] == 9
        await socket.nothing()
        live_one = (await user.post(f"/api/v1/{store}", json={"n": 4})).json()
        event = await socket.next()
        assert (event["op"], event["id"]) == ("create", live_one["_id"])
        await socket.nothing()


async def test_a_resume_token_the_server_did_not_hand_out_is_refused_at_once(
    live, make_user, store
):
    """Resume tokens are sealed. One made up (a position past the marker that ends a replay
    used to hold a replay slot and a change stream until the request's deadline), altered,
    or sealed by another deployment is refused with 400 at once, on the socket and by the
    change feed, which reads the same tokens; one of the shape handed out before the seal is
    expired (410), so its client reloads."""
    user = await make_user()
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        await socket.subscribe(store=store)
        await user.post(f"/api/v1/{store}", json={"n": 0})
        real = (await socket.next())["resume"]
    body, _, seal = real.rpartition(".")
    seconds, inc, data = body.split(".")
    later = f"{int(seconds, 16) + 86_400:x}.{inc}.{data}"
    elsewhere = ResumeTokens("another deployment's secret")
    forged = [
        f"{later}.{seal}",
        f"{body}.{'0' * len(seal)}",
        f"{body[:-3]}{'1' if body[-3] != '1' else '2'}{body[-2:]}.{seal}",
        elsewhere.make(Position(Timestamp(int(seconds, 16), int(inc, 16)), data)),
    ]
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        for token in forged:
            started = time.monotonic()
            ack = await socket.subscribe(store=store, resume=token)
            assert ack["success"] is False, (token, ack)
            assert (ack["code"], ack["error"]) == ("400", "INVALID"), token
            assert time.monotonic() - started < 2
        # A token kept from before tokens were sealed: expired, so the client reloads.
        ack = await socket.subscribe(store=store, resume=body)
        assert (ack["code"], ack["error"]) == ("410", "RESUME_EXPIRED")
        assert (await socket.subscribe(store=store, resume=real))["success"] is True
    for token in forged:
        response = await user.get(f"/api/v1/{store}/_changes", params={"since": token})
        assert response.status_code == 400 and response.json()["error"] == "INVALID"
    response = await user.get(f"/api/v1/{store}/_changes", params={"since": body})
    assert response.status_code == 410 and response.json()["error"] == "RESUME_EXPIRED"
    feed = await user.get(f"/api/v1/{store}/_changes", params={"since": real})
    assert feed.status_code == 200


async def test_resume_while_writes_continue_has_no_gap_or_duplicate(live, make_user, store):
    user = await make_user()
    token = token_of(user)
    async with listening(live.url, auth={"token": token}) as socket:
        await socket.subscribe(store=store)
        await user.post(f"/api/v1/{store}", json={"n": -1})
        last_seen = (await socket.next())["resume"]
    before = [(await user.post(f"/api/v1/{store}", json={"n": n})).json()["_id"] for n in range(5)]

    async def keep_writing() -> list[str]:
        ids = []
        for n in range(5, 35):
            ids.append((await user.post(f"/api/v1/{store}", json={"n": n})).json()["_id"])
        return ids

    async with listening(live.url, auth={"token": token}) as socket:
        writer = asyncio.create_task(keep_writing())
        await asyncio.sleep(0.05)
        assert (await socket.subscribe(store=store, resume=last_seen))["success"] is True
        during = await writer
        expected = before + during
        got = [(await socket.next())["id"] for _ in expected]
        assert got == expected  # every write once, in order
        await socket.nothing()


async def test_resume_replays_nothing_from_other_stores(live, make_user, store):
    user = await make_user()
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        first = await socket.subscribe(store=store)
        await user.post(f"/api/v1/{store}", json={"n": 1})
        token = (await socket.next())["resume"]
        await socket.sio.call("unsubscribe", {"subscription": first["subscription"]}, timeout=5)
        other = f"{store}x"
        await user.post(f"/api/v1/{store}", json={"n": 2})  # not in `other`
        ack = await socket.subscribe(store=other, resume=token)
        assert ack["success"] is True
        await socket.nothing()


async def test_group_changes_reach_open_sockets(live, admin, make_user, store):
    owner, watcher = await make_user(groups=["owners"]), await make_user(groups=["x"])
    async with listening(live.url, auth={"token": token_of(watcher)}) as socket:
        await socket.subscribe(store=store)
        response = await admin.patch(f"/api/v1/_users/{watcher.id}", json={"groups": ["owners"]})
        assert response.status_code == 200
        await asyncio.sleep(4.6)  # credentials are re-read within 5 s
        made = (await owner.post(f"/api/v1/{store}", json={"n": 1})).json()
        event = await socket.next()
        assert (event["op"], event["id"]) == ("create", made["_id"])


async def test_a_store_made_outside_the_api_still_reports_deletes(app, live, make_user, store):
    """A collection created without pre-images gets them on first use, so its deletes (which
    need the entity as it was to check access) still reach subscribers."""
    await app.state.services.storage.db.create_collection(store)
    user = await make_user()
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        await socket.subscribe(store=store)
        made = (await user.post(f"/api/v1/{store}", json={"n": 1})).json()
        assert (await socket.next())["op"] == "create"
        await user.delete(f"/api/v1/{store}/{made['_id']}")
        event = await socket.next()
        assert (event["op"], event["id"]) == ("delete", made["_id"])


async def test_socket_io_polling_responses_carry_a_request_id(live):
    async with httpx.AsyncClient(base_url=live.url) as http:
        response = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
    assert response.status_code == 200
    assert response.headers["x-request-id"]
    assert response.text.startswith("0{")  # the Engine.IO open packet


async def test_a_polling_session_that_never_connects_is_closed(live, make_user, monkeypatch):
    """python-socketio's Engine.IO sessions get the connect wait our websocket front has: one
    that never sends its Socket.IO connect (credentials) is closed, one that did stays."""
    monkeypatch.setattr(sio_module, "CONNECT_WAIT_S", 0.5)
    user = await make_user()
    polling = {"EIO": "4", "transport": "polling"}
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:

        async def opened() -> str:
            response = await http.get("/socket.io/", params=polling)
            sid: str = orjson.loads(response.text[1:])["sid"]
            return sid

        idle, connected = await opened(), await opened()
        sent = await http.post(
            "/socket.io/",
            params={**polling, "sid": connected},
            content="40" + orjson.dumps({"token": token_of(user)}).decode(),
        )
        assert sent.status_code == 200
        reply = await http.get("/socket.io/", params={**polling, "sid": connected})
        assert reply.text.startswith("40{"), reply.text  # connected
        await asyncio.sleep(1.5)
        gone = await http.get("/socket.io/", params={**polling, "sid": idle})
        assert gone.status_code == 400, gone.text  # forgotten, not kept until a poll comes
        kept = await http.post("/socket.io/", params={**polling, "sid": connected}, content="3")
        assert kept.status_code == 200


async def test_a_polling_session_that_disconnects_is_ended(live, make_user):
    """A client's Socket.IO disconnect (41) ends its Engine.IO session too, as on our own
    fronts; kept, it would answer pings for ever with nothing connected."""
    user = await make_user()
    polling = {"EIO": "4", "transport": "polling"}
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        opened = await http.get("/socket.io/", params=polling)
        session = {**polling, "sid": orjson.loads(opened.text[1:])["sid"]}
        auth = "40" + orjson.dumps({"token": token_of(user)}).decode()
        assert (await http.post("/socket.io/", params=session, content=auth)).status_code == 200
        assert (await http.get("/socket.io/", params=session)).text.startswith("40{")
        assert (await http.post("/socket.io/", params=session, content="41")).status_code == 200
        # Gone at once: no poll waits for the next ping (25 s) on it.
        gone = await asyncio.wait_for(http.get("/socket.io/", params=session), 3)
        assert gone.status_code == 400 or gone.text == "1", gone.text


@pytest.mark.parametrize(
    "only",
    ["name", "address.city", "items.x", "items.x,items.y", "address,name", "missing", "items"],
)
async def test_event_projection_matches_the_databases(live, make_user, store, only):
    """The hub projects in memory; it must agree with MongoDB's projection behind REST."""
    user = await make_user()
    body = {
        "name": "N",
        "secret": 1,
        "address": {"city": "C", "zip": 9},
        "items": [{"x": 1, "y": 2, "z": 3}, {"y": 5}, 7, {"x": 8}],
    }
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        await socket.subscribe(store=store, only=only)
        made = (await user.post(f"/api/v1/{store}", json=body)).json()
        event = await socket.next()
    from_database = (await user.get(f"/api/v1/{store}/{made['_id']}", params={"only": only})).json()
    assert event["entity"] == from_database


async def test_resume_under_steady_writes_is_acked_quickly_and_other_subscriptions_flow(
    live, make_user, store
):
    """50 writes/s to the store never stop while a client resumes: the ack comes within 2 s,
    every write arrives exactly once across both connections, and the socket's other
    subscription keeps receiving while the replay runs."""
    user = await make_user()
    token = token_of(user)
    other = f"{store}side"
    created: list[str] = []
    stop = asyncio.Event()

    async def write_steadily(target: str, into: list[str]) -> None:
        started = time.monotonic()
        n = 0
        while not stop.is_set():
            made = await user.post(f"/api/v1/{target}", json={"n": n})
            into.append(made.json()["_id"])
            n += 1
            await asyncio.sleep(max(0.0, started + n / 50 - time.monotonic()))

    seen_first: list[str] = []
    async with listening(live.url, auth={"token": token}) as socket:
        await socket.subscribe(store=store)
        writer = asyncio.create_task(write_steadily(store, created))
        for _ in range(20):
            event = await socket.next()
            seen_first.append(event["id"])
        last_seen = event["resume"]
    await asyncio.sleep(1.0)  # ~50 writes missed while disconnected

    side: list[str] = []
    async with listening(live.url, auth={"token": token}) as socket:
        side_ack = await socket.subscribe(store=other)
        side_writer = asyncio.create_task(write_steadily(other, side))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        ack = await socket.subscribe(store=store, resume=last_seen)
        acked_after = time.monotonic() - started
        assert ack["success"] is True, ack
        assert acked_after < 2.0, acked_after
        await asyncio.sleep(1.5)
        stop.set()
        await writer
        await side_writer
        got: dict[str, list[str]] = {ack["subscription"]: [], side_ack["subscription"]: []}
        while len(got[ack["subscription"]]) + len(seen_first) < len(created) or len(
            got[side_ack["subscription"]]
        ) < len(side):
            try:
                event = await socket.next()
            except TimeoutError:  # say what is missing, to tell lateness from a gap
                resumed = seen_first + got[ack["subscription"]]
                missing = [i for i in created if i not in resumed]
                late_side = [i for i in side if i not in got[side_ack["subscription"]]]
                raise AssertionError(
                    f"no event for 5 s: {len(missing)} of {len(created)} writes missing on "
                    f"the resumed store (first {missing[:3]}, at index "
                    f"{created.index(missing[0]) if missing else None}; resumed from "
                    f"index {len(seen_first)}), {len(late_side)} of {len(side)} on the other"
                ) from None
            got[event["subscription"]].append(event["id"])
        await socket.nothing(0.5)
    assert seen_first + got[ack["subscription"]] == created  # none missed, none twice, in order
    assert got[side_ack["subscription"]] == side
