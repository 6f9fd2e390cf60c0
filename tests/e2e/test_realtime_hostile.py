"""Realtime input from a hostile client, found by a review that attacked the fronts: reserved
event names, subscribes sent side by side, an ``only`` of thousands of fields, and an Origin
header that is not a URL."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import orjson
import pytest
import socketio
from websockets.asyncio.client import connect

from app.query import MAX_ONLY_FIELDS
from app.realtime.hub import MAX_SUBSCRIPTIONS
from tests.e2e.live import live_server
from tests.e2e.sockets import WAIT, token_of
from tests.helpers import unique

pytestmark = pytest.mark.asyncio

POLLING = {"EIO": "4", "transport": "polling"}


async def eventually(check, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_client_event_named_connect_does_not_connect_again(settings, make_user):
    """python-socketio handed ``42["connect", ...]`` to our connect handler: each one
    attached the socket once more (500 of them locked the user out for good)."""
    user = await make_user()
    auth = orjson.dumps({"token": token_of(user)}).decode()
    async with (
        live_server(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        hub = server.app.state.hub
        opened = await http.get("/socket.io/", params=POLLING)
        session = {**POLLING, "sid": orjson.loads(opened.text[1:])["sid"]}
        assert (await http.post("/socket.io/", params=session, content="40" + auth)).is_success
        assert (await http.get("/socket.io/", params=session)).text.startswith("40{")
        for name in ("connect", "disconnect", "connect_error"):
            packets = "\x1e".join(f'421["{name}",{{}},{auth}]' for _ in range(5))
            assert (await http.post("/socket.io/", params=session, content=packets)).is_success
        assert len(hub.clients) == 1
        # Still connected, and still served.
        subscribe = '422["subscribe",' + orjson.dumps({"store": unique("s")}).decode() + "]"
        assert (await http.post("/socket.io/", params=session, content=subscribe)).is_success
        reply = await http.get("/socket.io/", params=session)
        assert '432[{"success":true' in reply.text, reply.text
        assert (await http.post("/socket.io/", params=session, content="41")).is_success
        await eventually(lambda: not hub.clients, 5, "the socket stayed attached")


@pytest.mark.parametrize("transports", [["polling"], ["websocket"]])
async def test_subscribes_sent_together_keep_the_limit_and_leave_nothing_behind(
    settings, make_user, transports
):
    user = await make_user()
    store = unique("together")
    async with live_server(settings) as server:
        hub = server.app.state.hub
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(
            server.url, auth={"token": token_of(user)}, transports=transports, wait_timeout=WAIT
        )
        acks = []
        for _ in range(10):  # 13 at a time: a long-polling POST carries at most 16 packets
            calls = [client.call("subscribe", {"store": store}, timeout=20) for _ in range(13)]
            acks += await asyncio.gather(*calls)
        assert sum(1 for ack in acks if ack.get("success")) == MAX_SUBSCRIPTIONS
        refused = [ack for ack in acks if not ack.get("success")]
        assert {(ack["code"], ack["error"]) for ack in refused} == {("409", "CONFLICT")}
        # Gone while subscribes are still on their way: none of them stays in the hub.
        for _ in range(10):
            await client.emit("subscribe", {"store": unique("late")})
        await client.disconnect()
        await eventually(lambda: not hub.clients, 5, "the socket stayed attached")
        await asyncio.sleep(0.5)
        assert not hub.by_store, list(hub.by_store)


async def test_only_is_limited_in_fields(live, make_user, store):
    user = await make_user()
    many = ",".join(f"f{n}" for n in range(MAX_ONLY_FIELDS + 1))
    enough = ",".join(f"f{n}" for n in range(MAX_ONLY_FIELDS))
    listed = await user.get(f"/api/v1/{store}", params={"only": many})
    assert listed.status_code == 400 and "at most" in listed.json()["message"]
    assert (await user.get(f"/api/v1/{store}", params={"only": enough})).status_code == 200
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        live.url, auth={"token": token_of(user)}, transports=["websocket"], wait_timeout=WAIT
    )
    try:
        ack = await client.call("subscribe", {"store": store, "only": many}, timeout=WAIT)
        assert (ack["code"], ack["error"]) == ("400", "INVALID")
        ack = await client.call("subscribe", {"store": store, "only": enough}, timeout=WAIT)
        assert ack["success"] is True
    finally:
        await client.disconnect()


@pytest.mark.parametrize("eio", ["3", "4"])
async def test_an_origin_that_is_not_a_url_is_refused_not_crashed(live, eio):
    url = f"ws://127.0.0.1:{live.port}/socket.io/?EIO={eio}&transport=websocket"
    headers = {"Cookie": "sid=x", "Origin": "http://["}
    async with connect(url, additional_headers=headers, open_timeout=WAIT) as websocket:
        assert str(await websocket.recv()).startswith("0{")
        if eio == "4":
            await websocket.send("40")
        refusal = str(await asyncio.wait_for(websocket.recv(), WAIT))
    assert refusal.startswith("44"), refusal
    body = orjson.loads(refusal[2:])
    envelope = body if eio == "3" else body["data"]
    assert (envelope["code"], envelope["error"]) == ("401", "UNAUTHORIZED")


async def test_malformed_polling_payloads_make_one_line_each_not_a_traceback(live, caplog):
    """python-engineio and python-socketio logged a whole traceback for each of these, from
    sessions that never showed credentials: a log anyone could flood."""
    bodies = [
        b"\xff\xfe\x00",
        "\x1e".join(["3"] * 20).encode(),
        b"42",
        b'42["a",' + b"[" * 3000 + b"]" * 3000 + b"]",
        b'42["a", NaN]',
        b'42["\\ud800"]',
    ]
    caplog.set_level(logging.WARNING)
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        for body in bodies:
            opened = await http.get("/socket.io/", params=POLLING)
            session = {**POLLING, "sid": orjson.loads(opened.text[1:])["sid"]}
            answer = await http.post("/socket.io/", params=session, content=body)
            assert answer.status_code in (200, 400), answer.text
        still = await http.get("/socket.io/", params=POLLING)
        assert still.status_code == 200
    from_library = [r for r in caplog.records if r.name.split(".")[0] in ("engineio", "socketio")]
    assert from_library, "nothing was logged at all"
    assert all(r.exc_info is None and r.levelno == logging.WARNING for r in from_library)
    assert "Traceback" not in caplog.text
