"""A websocket client that stops reading: once the connection's buffer is full a send waits
for it, for ever. A close of such a socket (its credentials revoked here; a missed pong or a
full event queue go the same way) waits ``CLOSE_WAIT_S`` for that send, then cuts the
connection. Before, the close waited on the send, so the socket, its queue and every close
retried on it stayed for good, and a stopping server waited for it too."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from websockets.asyncio.client import connect

from app.realtime import wire
from tests.e2e.live import live_server
from tests.e2e.sockets import token_of
from tests.helpers import unique

pytestmark = pytest.mark.asyncio

BIG = "x" * 200_000  # per event; a few dozen fill the kernel's buffers on both sides


async def eventually(check, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("eio", ["4", "3"])
async def test_a_socket_that_stopped_reading_is_cut_when_it_must_close(
    settings, make_user, monkeypatch, eio
):
    monkeypatch.setattr(wire, "CLOSE_WAIT_S", 1.0)
    user = await make_user()
    token = token_of(user)
    store = unique("stalled")
    async with live_server(settings) as server:
        hub = server.app.state.hub
        url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO={eio}&transport=websocket"
        if eio == "3":
            url += f"&token={token}"
        # max_queue=1: the client library stops reading the connection once a frame waits.
        async with connect(url, max_queue=1, max_size=None) as websocket:
            assert str(await websocket.recv()).startswith("0{")
            if eio == "4":
                await websocket.send("40" + orjson.dumps({"token": token}).decode())
            assert str(await websocket.recv()).startswith("40")
            await websocket.send('421["subscribe",' + orjson.dumps({"store": store}).decode() + "]")
            assert str(await websocket.recv()).startswith("431")
            (client,) = hub.clients.values()
            socket = client.peer.socket

            # From here on the client reads nothing. Events pile up until a send waits.
            for n in range(200):
                made = await user.post(f"/api/v1/{store}", json={"n": n, "pad": BIG})
                assert made.status_code == 201, made.text
                if n % 10 == 9 and socket._lock.locked():
                    break
            await eventually(socket._lock.locked, 10, "no send ever had to wait")

            signed_out = await user.delete("/api/v1/auth")  # the liveness check closes it
            assert signed_out.status_code == 200, signed_out.text
            await eventually(lambda: not hub.clients, 8, "the stalled socket was never let go")
            assert socket.closed
        # The server stops promptly with it gone (the live server's exit is bounded too).
