"""Our Engine.IO v4 / Socket.IO v4 websocket front over a real uvicorn server and a real
websocket client, with a recording dispatcher: the wire format only (open packet, connect with
``auth``, server-driven heartbeat, acks, pushes, refusals, malformed input, detach once).
The whole stack with python-socketio's own client is in ``test_realtime.py``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.acl import Principal
from app.errors import Unauthorized
from app.realtime.eio4 import EIO4Front
from tests.e2e.asgi_server import serving
from tests.e2e.test_eio3_protocol import (
    ALICE,
    TIMEOUT,
    assert_envelope,
    eventually,
    expect_closed,
    recv,
    recv_json,
)
from tests.e2e.test_eio3_protocol import Server as V3Server

pytestmark = pytest.mark.asyncio(loop_scope="session")

FAST_INTERVAL_MS, FAST_TIMEOUT_MS, FAST_CONNECT_WAIT_MS = 150, 250, 600


class Server(V3Server):
    """The v3 tests' live server with our v4 fronts, which take ``auth`` from the connect."""

    def __init__(self) -> None:
        super().__init__()
        self._normal = EIO4Front(self.dispatcher, self.authenticate, max_payload=4096)
        self._fast = EIO4Front(
            self.dispatcher,
            self.authenticate,
            FAST_INTERVAL_MS,
            FAST_TIMEOUT_MS,
            connect_wait_ms=FAST_CONNECT_WAIT_MS,
        )

    async def authenticate(
        self, headers: Mapping[str, str], query: Mapping[str, str], auth: Any
    ) -> Principal:
        self.auth_calls.append((headers, query, auth))
        if auth != {"token": "good"} and headers.get("cookie") != "sid=good":
            raise Unauthorized()
        return ALICE

    def url(self, prefix: str = "", eio: str = "4") -> str:
        return super().url(prefix, eio)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def server() -> AsyncIterator[Server]:
    live = Server()
    async with serving(live.app) as port:
        live.port = port
        yield live


async def open_connected(server: Server, prefix: str = "") -> ClientConnection:
    ws = await connect(server.url(prefix), open_timeout=TIMEOUT)
    await recv_json(ws, "0")
    await ws.send('40{"token":"good"}')
    assert (await recv_json(ws, "40"))["sid"]
    return ws


@pytest_asyncio.fixture(loop_scope="session")
async def client(server: Server) -> AsyncIterator[ClientConnection]:
    """A connected client; checks it is detached once at the end."""
    ws = await open_connected(server)
    peer = server.dispatcher.attached[-1]
    yield ws
    await ws.close()
    await eventually(lambda: server.running == 0)
    assert server.dispatcher.detached.count(peer) == 1
    assert server.crashes == []


async def test_open_packet_then_connect_with_the_auth_payload(server: Server) -> None:
    attached = len(server.dispatcher.attached)
    async with await connect(server.url(), open_timeout=TIMEOUT) as ws:
        handshake = await recv_json(ws, "0")
        assert set(handshake) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
        assert handshake["upgrades"] == []
        assert (handshake["pingInterval"], handshake["pingTimeout"]) == (25000, 60000)
        assert handshake["maxPayload"] == 4096
        assert len(server.dispatcher.attached) == attached  # nobody is attached before 40
        await ws.send('40{"token":"good"}')
        connected = await recv_json(ws, "40")
        assert isinstance(connected["sid"], str) and connected["sid"] != handshake["sid"]
        await eventually(lambda: len(server.dispatcher.attached) == attached + 1)
        assert server.dispatcher.attached[-1].principal == ALICE
    _, query, auth = server.auth_calls[-1]
    assert query == {"EIO": "4", "transport": "websocket"}
    assert auth == {"token": "good"}


async def test_a_cookie_is_enough_without_an_auth_payload(server: Server) -> None:
    headers = {"Cookie": "sid=good"}
    async with await connect(server.url(), additional_headers=headers, open_timeout=TIMEOUT) as ws:
        await recv_json(ws, "0")
        await ws.send("40")
        assert (await recv_json(ws, "40"))["sid"]
    assert server.auth_calls[-1][2] is None


@pytest.mark.parametrize("connect_packet", ["40", '40{"token":"bad"}', "40{not json"])
async def test_refused_connect_gets_connect_error_then_close(
    server: Server, connect_packet: str
) -> None:
    attached = len(server.dispatcher.attached)
    async with await connect(server.url(), open_timeout=TIMEOUT) as ws:
        await recv_json(ws, "0")
        await ws.send(connect_packet)
        refused = await recv_json(ws, "44")
        status, error = (
            (400, "BAD_REQUEST") if "not json" in connect_packet else (401, "UNAUTHORIZED")
        )
        assert isinstance(refused["message"], str)
        assert_envelope(refused["data"], status, error)
        await expect_closed(ws, 1008)
    await eventually(lambda: server.running == 0)
    assert len(server.dispatcher.attached) == attached
    assert server.crashes == []


async def test_events_before_connect_are_ignored(server: Server) -> None:
    async with await connect(server.url(), open_timeout=TIMEOUT) as ws:
        await recv_json(ws, "0")
        handled = len(server.dispatcher.handled)
        await ws.send('421["subscribe",{"store":"notes"}]')
        await ws.send('40{"token":"good"}')
        assert (await recv_json(ws, "40"))["sid"]
        assert len(server.dispatcher.handled) == handled


async def test_event_with_ack_id_is_acked_and_the_push_follows(
    server: Server, client: ClientConnection
) -> None:
    await client.send('421["subscribe",{"store":"notes"}]')
    frames = {await recv(client), await recv(client)}
    ack = next(f for f in frames if isinstance(f, str) and f.startswith("431"))
    change = next(f for f in frames if isinstance(f, str) and f.startswith("42["))
    assert json.loads(ack[3:]) == [{"success": True, "subscription": "s1"}]
    assert json.loads(change[2:]) == ["change", {"subscription": "s1", "op": "insert"}]
    assert server.dispatcher.handled[-1] == ("subscribe", {"store": "notes"})


async def test_encoded_change_frames_are_socket_io_events(
    server: Server, client: ClientConnection
) -> None:
    peer = server.dispatcher.attached[-1]
    await peer.emit_encoded("change", '{"n":1}')
    await peer.emit_encoded("other", '{"n":2}')
    assert await recv_json(client, "42") == ["change", {"n": 1}]
    assert await recv_json(client, "42") == ["other", {"n": 2}]


async def test_unknown_event_acks_the_dispatchers_error(client: ClientConnection) -> None:
    await client.send('427["nope",{"a":1}]')
    [body] = await recv_json(client, "437")
    assert_envelope(body, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "frame", ["4", "42notjson", "4x", "", "9", "42[]", "42[1,2]", "45-[]", b"\x04binary"]
)
async def test_malformed_frames_without_an_ack_id_are_dropped(
    server: Server, client: ClientConnection, frame: str | bytes
) -> None:
    await client.send(frame)
    await client.send("2probe")  # the connection lives on, and nothing came before this
    assert await recv(client) == "3probe"
    assert server.crashes == []


async def test_malformed_event_with_ack_id_is_acked_with_the_error(
    client: ClientConnection,
) -> None:
    await client.send("423notjson")
    [body] = await recv_json(client, "433")
    assert_envelope(body, 400, "BAD_REQUEST")
    await client.send('424["subscribe",{"n":18446744073709551616}]')
    [body] = await recv_json(client, "434")
    assert_envelope(body, 400, "INVALID")


async def test_only_the_default_namespace_is_served(client: ClientConnection) -> None:
    await client.send("40/admin,")
    assert await recv_json(client, "44/admin,") == {"message": "Invalid namespace"}
    await client.send('40{"token":"good"}')  # already connected: ignored
    await client.send("2probe")
    assert await recv(client) == "3probe"


async def test_server_pings_and_a_client_that_answers_stays(server: Server) -> None:
    async with await open_connected(server, "/fast") as ws:
        peer = server.dispatcher.attached[-1]
        started = time.monotonic()
        for _ in range(4):  # 4 intervals: longer than one interval + timeout of silence
            assert await recv(ws) == "2"
            await ws.send("3")
        assert time.monotonic() - started >= 3 * FAST_INTERVAL_MS / 1000
        assert peer in server.dispatcher.attached and peer not in server.dispatcher.detached


async def test_a_client_that_does_not_answer_pings_is_closed(server: Server) -> None:
    async with await open_connected(server, "/fast") as ws:
        peer = server.dispatcher.attached[-1]
        assert await recv(ws) == "2"
        started = time.monotonic()
        await expect_closed(ws, 1000)
        assert time.monotonic() - started >= 0.8 * FAST_TIMEOUT_MS / 1000
    await eventually(lambda: server.dispatcher.detached.count(peer) == 1)


async def test_a_socket_that_never_connects_is_closed_after_the_connect_wait(
    server: Server,
) -> None:
    """Answering pings is not enough to hold a websocket: without a connect (valid
    credentials) it is closed after the connect wait, and nobody was attached."""
    attached = len(server.dispatcher.attached)
    async with await connect(server.url("/fast"), open_timeout=TIMEOUT) as ws:
        await recv_json(ws, "0")
        started = time.monotonic()

        async def answer_pings() -> None:
            while True:
                if await recv(ws) == "2":
                    await ws.send("3")

        with pytest.raises(ConnectionClosed):
            await answer_pings()
        assert ws.close_code == 1008
        waited = time.monotonic() - started
        assert 0.8 * FAST_CONNECT_WAIT_MS / 1000 <= waited < 5
    assert len(server.dispatcher.attached) == attached


@pytest.mark.parametrize("goodbye", ["41", "1"])
async def test_client_disconnect_closes_and_detaches_once(server: Server, goodbye: str) -> None:
    async with await open_connected(server) as ws:
        peer = server.dispatcher.attached[-1]
        await ws.send(goodbye)
        await expect_closed(ws, 1000)
    await eventually(lambda: server.running == 0)
    assert server.dispatcher.detached.count(peer) == 1


async def test_peer_close_says_goodbye_and_later_emits_are_dropped(server: Server) -> None:
    async with await open_connected(server) as ws:
        peer = server.dispatcher.attached[-1]
        await peer.close()
        assert await recv(ws) == "41"
        await expect_closed(ws, 1000)
    await peer.emit("change", {"late": True})  # must not raise
    await eventually(lambda: server.dispatcher.detached.count(peer) == 1)


async def test_concurrent_emits_arrive_whole(server: Server, client: ClientConnection) -> None:
    peer = server.dispatcher.attached[-1]
    await asyncio.gather(*(peer.emit_encoded("change", f'{{"n":{n}}}') for n in range(50)))
    received = [await recv_json(client, "42") for _ in range(50)]
    assert [item[1]["n"] for item in received] == list(range(50))


async def test_first_pings_are_spread_over_the_second_half_of_the_interval() -> None:
    """Sockets that connect together are not pinged together ever after."""
    server = Server()
    front = EIO4Front(server.dispatcher, server.authenticate, ping_interval_ms=10000)
    firsts = [front.first_ping(100.0) for _ in range(200)]
    assert all(105.0 <= first <= 110.0 for first in firsts)
    assert max(firsts) - min(firsts) > 2.5
