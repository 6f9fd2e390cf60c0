"""How many sockets one user, and one server process, may hold: past either limit a connect
is refused with the error envelope (429 for the user's, 503 for the process's), and a socket
that closes frees its place. Real python-socketio clients, over our websocket front and over
python-socketio's long-polling front. Sessions opened without connecting (no credentials shown
yet) are bounded on their own: past the limit a new one is refused at its HTTP request."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
import socketio
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app.realtime import sio as sio_module
from tests.e2e.conftest import make_settings
from tests.e2e.live import live_server
from tests.e2e.sockets import token_of

pytestmark = pytest.mark.asyncio

# A connect that starts with long-polling is python-socketio's (it upgrades afterwards).
TRANSPORTS = [["websocket"], ["polling", "websocket"]]


async def connected(url: str, user: Any, transports: list[str]) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, transports=transports, auth={"token": token_of(user)}, wait_timeout=5)
    return client


async def refusal(url: str, user: Any, transports: list[str]) -> dict[str, Any]:
    """The error envelope a refused connect carries."""
    client = socketio.AsyncClient(reconnection=False)
    refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    client.on("connect_error", lambda data: refused.done() or refused.set_result(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            url, transports=transports, auth={"token": token_of(user)}, wait_timeout=5
        )
    data = await asyncio.wait_for(refused, 5)
    envelope: dict[str, Any] = data["data"]
    return envelope


async def connected_again(url: str, user: Any, transports: list[str]) -> socketio.AsyncClient:
    """A connect that succeeds once the server has noticed a socket closing."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await connected(url, user, transports)
        except socketio.exceptions.ConnectionError:
            assert time.monotonic() < deadline, "the closed socket's place was not freed"
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("transports", TRANSPORTS)
async def test_sockets_past_the_users_and_the_process_limit_are_refused(
    settings, make_user, tmp_path, transports
):
    limited = make_settings(
        settings.mongodb_url, tmp_path, MAX_SOCKETS_PER_USER="2", MAX_SOCKETS="3"
    )
    alice, bob = await make_user(), await make_user()
    async with live_server(limited) as server:
        sockets = [await connected(server.url, alice, transports) for _ in range(2)]
        try:
            envelope = await refusal(server.url, alice, transports)
            assert (envelope["code"], envelope["error"]) == ("429", "TOO_MANY_REQUESTS")
            assert "MAX_SOCKETS_PER_USER" in envelope["message"]

            sockets.append(await connected(server.url, bob, transports))  # another user may
            envelope = await refusal(server.url, bob, transports)  # ...but the process is full
            assert (envelope["code"], envelope["error"]) == ("503", "UNAVAILABLE")
            assert "MAX_SOCKETS" in envelope["message"]

            # The sockets held keep working, and a closed one frees its place.
            ack = await sockets[0].call("subscribe", {"store": "limits"}, timeout=5)
            assert ack["success"] is True
            await sockets.pop(0).disconnect()
            sockets.append(await connected_again(server.url, alice, transports))
            envelope = await refusal(server.url, alice, transports)
            assert envelope["error"] in ("TOO_MANY_REQUESTS", "UNAVAILABLE")
            assert len(server.app.state.hub.clients) == 3
        finally:
            for socket in sockets:
                await socket.disconnect()


POLLING = {"EIO": "4", "transport": "polling"}


async def test_sessions_not_yet_connected_are_bounded(settings, make_user, tmp_path):
    limited = make_settings(settings.mongodb_url, tmp_path, MAX_SOCKETS_OPENING="2")
    user = await make_user()
    async with (
        live_server(limited) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        ws_url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"
        # Connected sockets, on both fronts, do not count.
        held = [await connected(server.url, user, transports) for transports in TRANSPORTS]
        try:
            # Two sessions left waiting for their connect: one long-polling, one websocket.
            waiting = await http.get("/socket.io/", params=POLLING)
            assert waiting.status_code == 200 and waiting.text.startswith("0{")
            sid = orjson.loads(waiting.text[1:])["sid"]
            async with connect(ws_url) as websocket:
                assert str(await asyncio.wait_for(websocket.recv(), 5)).startswith("0{")

                # A third is refused, whichever way it comes, with the error envelope.
                refused = await http.get("/socket.io/", params=POLLING)
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "1"
                body = refused.json()
                assert (body["code"], body["error"]) == ("503", "UNAVAILABLE")
                assert "MAX_SOCKETS_OPENING" in body["message"]
                assert body["requestId"] == refused.headers["x-request-id"]
                with pytest.raises(InvalidStatus) as denied:
                    async with connect(ws_url):
                        pass
                assert denied.value.response.status_code == 503
                assert orjson.loads(denied.value.response.body)["error"] == "UNAVAILABLE"
                async with aiohttp.ClientSession() as session:  # closed, though refused
                    client = socketio.AsyncClient(reconnection=False, http_session=session)
                    with pytest.raises(socketio.exceptions.ConnectionError):
                        await client.connect(
                            server.url, transports=["polling"], auth={"token": token_of(user)}
                        )
                # A session already open goes on: the polling one connects.
                sent = await http.post(
                    "/socket.io/",
                    params={**POLLING, "sid": sid},
                    content="40" + orjson.dumps({"token": token_of(user)}).decode(),
                )
                assert sent.status_code == 200
                reply = await http.get("/socket.io/", params={**POLLING, "sid": sid})
                assert reply.text.startswith("40{"), reply.text

                # Connected, it no longer counts: a new session may open.
                held.append(await connected(server.url, user, ["websocket"]))
                assert (await http.get("/socket.io/", params=POLLING)).status_code == 200
                refused = await http.get("/socket.io/", params=POLLING)  # that one waits too
                assert refused.status_code == 503
            # The waiting websocket closed: its place is free again.
            deadline = time.monotonic() + 5
            while (await http.get("/socket.io/", params=POLLING)).status_code != 200:
                assert time.monotonic() < deadline, "the closed websocket's place was not freed"
                await asyncio.sleep(0.1)
        finally:
            for socket in held:
                await socket.disconnect()


async def test_a_session_closed_for_not_connecting_frees_its_place(settings, tmp_path, monkeypatch):
    monkeypatch.setattr(sio_module, "CONNECT_WAIT_S", 0.5)
    limited = make_settings(settings.mongodb_url, tmp_path, MAX_SOCKETS_OPENING="1")
    async with (
        live_server(limited) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        assert (await http.get("/socket.io/", params=POLLING)).status_code == 200
        assert (await http.get("/socket.io/", params=POLLING)).status_code == 503
        await asyncio.sleep(1.0)  # the first is closed for not connecting, and forgotten
        assert (await http.get("/socket.io/", params=POLLING)).status_code == 200
