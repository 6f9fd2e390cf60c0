"""The Engine.IO v3 / Socket.IO v2 front over a real uvicorn server and a real websocket client.

The front is served with a recording dispatcher and a cookie authenticator, so these tests pin
the wire format only: handshake, ping/pong, event acks, pushed events, refusal, silence,
malformed input, and that every connection is detached exactly once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.acl import Principal
from app.errors import NotFound, Unauthorized
from app.realtime.eio3 import EIO3Front
from app.realtime.peers import Peer
from tests.e2e.asgi_server import serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

TIMEOUT = 2.0
FAST_INTERVAL_MS, FAST_TIMEOUT_MS = 150, 250
ALICE = Principal(user_id="u1", login="alice")


class RecordingDispatcher:
    """Answers ``subscribe`` and then pushes one ``change``; refuses any other event."""

    def __init__(self) -> None:
        self.attached: list[Peer] = []
        self.detached: list[Peer] = []
        self.handled: list[tuple[str, Any]] = []
        self._pushes: set[asyncio.Task[None]] = set()

    def attach(self, peer: Peer) -> None:
        self.attached.append(peer)

    async def handle(self, peer: Peer, event: str, data: Any) -> dict[str, Any]:
        self.handled.append((event, data))
        if event != "subscribe":
            return NotFound(f"Unknown event: {event}").body()
        push = asyncio.create_task(peer.emit("change", {"subscription": "s1", "op": "insert"}))
        self._pushes.add(push)
        push.add_done_callback(self._pushes.discard)
        return {"success": True, "subscription": "s1"}

    async def detach(self, peer: Peer) -> None:
        self.detached.append(peer)


class Server:
    """A live uvicorn serving the front at ``/socket.io/`` and a fast-timeout one at ``/fast/``."""

    def __init__(self) -> None:
        self.dispatcher = RecordingDispatcher()
        self.auth_calls: list[tuple[Mapping[str, str], Mapping[str, str], Any]] = []
        self.crashes: list[BaseException] = []
        self.running = 0
        self.port = 0
        self._normal = EIO3Front(self.dispatcher, self.authenticate)
        self._fast = EIO3Front(
            self.dispatcher, self.authenticate, FAST_INTERVAL_MS, FAST_TIMEOUT_MS
        )

    async def authenticate(
        self, headers: Mapping[str, str], query: Mapping[str, str], auth: Any
    ) -> Principal:
        self.auth_calls.append((headers, query, auth))
        if headers.get("cookie") != "sid=good":
            raise Unauthorized()
        return ALICE

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        front = self._fast if path.startswith("/fast/") else self._normal
        self.running += 1
        try:
            await front(scope, receive, send)
        except BaseException as exc:
            self.crashes.append(exc)
            raise
        finally:
            self.running -= 1

    def url(self, prefix: str = "", eio: str = "3") -> str:
        return f"ws://127.0.0.1:{self.port}{prefix}/socket.io/?EIO={eio}&transport=websocket"


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def server() -> AsyncIterator[Server]:
    live = Server()
    async with serving(live.app) as port:
        live.port = port
        yield live


async def eventually(check: Callable[[], bool]) -> None:
    for _ in range(int(TIMEOUT / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail("condition not met in time")


async def recv(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def recv_json(ws: ClientConnection, prefix: str) -> Any:
    frame = await recv(ws)
    assert isinstance(frame, str)
    assert frame.startswith(prefix), frame
    return json.loads(frame[len(prefix) :])


async def expect_closed(ws: ClientConnection, code: int) -> None:
    """The next thing from the server is its close frame, with ``code``."""
    with pytest.raises(ConnectionClosed):
        await recv(ws)
    assert ws.close_code == code


async def assert_detached_once(server: Server, peer: Peer) -> None:
    await eventually(lambda: server.running == 0)
    assert server.dispatcher.detached.count(peer) == 1
    assert server.crashes == []


def assert_envelope(body: Any, status: int, error: str) -> None:
    assert body["success"] is False
    assert body["code"] == str(status)
    assert body["error"] == error
    assert isinstance(body["message"], str)
    assert isinstance(body["tags"], list)


async def open_client(
    server: Server, prefix: str = "", cookie: str = "sid=good"
) -> ClientConnection:
    return await connect(
        server.url(prefix), additional_headers={"Cookie": cookie}, open_timeout=TIMEOUT
    )


@pytest_asyncio.fixture(loop_scope="session")
async def client(server: Server) -> AsyncIterator[ClientConnection]:
    """A signed-in connection past the handshake; checks it is detached once at the end."""
    ws = await open_client(server)
    await recv_json(ws, "0")
    assert await recv(ws) == "40"
    peer = server.dispatcher.attached[-1]
    yield ws
    await ws.close()
    await assert_detached_once(server, peer)


async def test_handshake_is_open_packet_then_default_namespace_connect(server: Server) -> None:
    attached = len(server.dispatcher.attached)
    async with await open_client(server) as ws:
        handshake = await recv_json(ws, "0")
        assert set(handshake) == {"sid", "upgrades", "pingInterval", "pingTimeout"}
        assert isinstance(handshake["sid"], str)
        assert handshake["sid"]
        assert handshake["upgrades"] == []
        assert handshake["pingInterval"] == 25000
        assert handshake["pingTimeout"] == 60000
        assert await recv(ws) == "40"
        await eventually(lambda: len(server.dispatcher.attached) == attached + 1)
        peer = server.dispatcher.attached[-1]
        assert peer.principal == ALICE
    headers, query, auth = server.auth_calls[-1]
    assert headers["cookie"] == "sid=good"
    assert query == {"EIO": "3", "transport": "websocket"}
    assert auth is None
    await assert_detached_once(server, peer)


async def test_ping_is_answered_with_pong_echoing_the_payload(client: ClientConnection) -> None:
    await client.send("2")
    assert await recv(client) == "3"
    await client.send("2probe")
    assert await recv(client) == "3probe"


async def test_event_with_ack_id_is_acked_and_the_push_follows(
    server: Server, client: ClientConnection
) -> None:
    await client.send('421["subscribe",{"store":"notes"}]')
    frames = {await recv(client), await recv(client)}
    ack = next(f for f in frames if isinstance(f, str) and f.startswith("431"))
    change = next(f for f in frames if isinstance(f, str) and f.startswith("42"))
    assert json.loads(ack[3:]) == [{"success": True, "subscription": "s1"}]
    assert json.loads(change[2:]) == ["change", {"subscription": "s1", "op": "insert"}]
    assert server.dispatcher.handled[-1] == ("subscribe", {"store": "notes"})


async def test_event_without_ack_id_gets_no_ack(client: ClientConnection) -> None:
    await client.send('42["subscribe",{"store":"notes"}]')
    assert (await recv_json(client, "42"))[0] == "change"
    await client.send("2")
    assert await recv(client) == "3"


async def test_unknown_event_reaches_the_dispatcher_and_acks_its_error(
    server: Server, client: ClientConnection
) -> None:
    await client.send('427["nope",{"a":1}]')
    [body] = await recv_json(client, "437")
    assert_envelope(body, 404, "NOT_FOUND")
    assert server.dispatcher.handled[-1] == ("nope", {"a": 1})


@pytest.mark.parametrize("cookie", ["", "sid=bad"])
async def test_unauthenticated_client_gets_error_packet_then_close(
    server: Server, cookie: str
) -> None:
    attached = len(server.dispatcher.attached)
    async with await open_client(server, cookie=cookie) as ws:
        await recv_json(ws, "0")
        body = await recv_json(ws, "44")
        assert_envelope(body, 401, "UNAUTHORIZED")
        assert body["message"] == "Unauthorized"
        await expect_closed(ws, 1008)
    await eventually(lambda: server.running == 0)
    assert len(server.dispatcher.attached) == attached
    assert server.crashes == []


async def test_silent_client_is_disconnected_after_interval_plus_timeout(server: Server) -> None:
    async with await open_client(server, prefix="/fast") as ws:
        handshake = await recv_json(ws, "0")
        assert handshake["pingInterval"] == FAST_INTERVAL_MS
        assert handshake["pingTimeout"] == FAST_TIMEOUT_MS
        assert await recv(ws) == "40"
        peer = server.dispatcher.attached[-1]
        started = time.monotonic()
        await expect_closed(ws, 1000)
        assert time.monotonic() - started >= 0.8 * (FAST_INTERVAL_MS + FAST_TIMEOUT_MS) / 1000
    await assert_detached_once(server, peer)


async def test_pinging_client_stays_connected(server: Server) -> None:
    async with await open_client(server, prefix="/fast") as ws:
        await recv_json(ws, "0")
        assert await recv(ws) == "40"
        peer = server.dispatcher.attached[-1]
        for _ in range(6):  # 6 x 150 ms: longer than one interval + timeout of silence
            await asyncio.sleep(FAST_INTERVAL_MS / 1000)
            await ws.send("2")
            assert await recv(ws) == "3"
    await assert_detached_once(server, peer)


@pytest.mark.parametrize(
    "frame",
    ["4", "42notjson", "4x", "", "9", "42[]", "42[1,2]", '42{"a":1}', "45-[]", b"\x04binary"],
)
async def test_malformed_frame_gets_bad_request_and_connection_lives_on(
    server: Server, client: ClientConnection, frame: str | bytes
) -> None:
    await client.send(frame)
    assert_envelope(await recv_json(client, "44"), 400, "BAD_REQUEST")
    await client.send("2")
    assert await recv(client) == "3"
    assert server.crashes == []


async def test_malformed_event_with_ack_id_is_acked_with_the_error(
    client: ClientConnection,
) -> None:
    await client.send("423notjson")
    [body] = await recv_json(client, "433")
    assert_envelope(body, 400, "BAD_REQUEST")


async def test_only_the_default_namespace_is_served(client: ClientConnection) -> None:
    await client.send("40/admin,")
    assert await recv(client) == '44/admin,"Invalid namespace"'
    await client.send("40")  # already connected: ignored
    await client.send("41/admin,")  # never connected: ignored
    await client.send("2")
    assert await recv(client) == "3"


@pytest.mark.parametrize("goodbye", ["41", "1"])
async def test_client_disconnect_closes_and_detaches_once(server: Server, goodbye: str) -> None:
    async with await open_client(server) as ws:
        await recv_json(ws, "0")
        assert await recv(ws) == "40"
        peer = server.dispatcher.attached[-1]
        await ws.send(goodbye)
        await expect_closed(ws, 1000)
    await assert_detached_once(server, peer)


async def test_peer_close_says_goodbye_and_later_emits_are_dropped(server: Server) -> None:
    async with await open_client(server) as ws:
        await recv_json(ws, "0")
        assert await recv(ws) == "40"
        peer = server.dispatcher.attached[-1]
        await peer.close()
        assert await recv(ws) == "41"
        await expect_closed(ws, 1000)
    await peer.emit("change", {"late": True})  # must not raise
    await assert_detached_once(server, peer)


async def test_concurrent_emits_arrive_whole(server: Server, client: ClientConnection) -> None:
    peer = server.dispatcher.attached[-1]
    await asyncio.gather(*(peer.emit("change", {"n": n}) for n in range(50)))
    received = [await recv_json(client, "42") for _ in range(50)]
    assert sorted(item[1]["n"] for item in received) == list(range(50))


async def test_long_polling_is_refused_with_engine_io_error(server: Server) -> None:
    url = f"http://127.0.0.1:{server.port}/socket.io/?EIO=3&transport=polling"
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.get(url)
    assert response.status_code == 400
    assert response.json() == {"code": 3, "message": "Bad request"}


async def test_other_protocol_versions_are_rejected_before_accept(server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(server.url(eio="4"), open_timeout=TIMEOUT)
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize(
    ("frame", "named"),
    [
        ('425["subscribe",{"store":"notes","n":18446744073709551616}]', "n"),
        ('425["subscribe",{"a":[1,-9223372036854775809]}]', "a.1"),
        ('425["subscribe",1000000000000000000000000000000]', "body"),
    ],
)
async def test_integers_beyond_64_bits_are_refused_naming_the_field(
    server: Server, client: ClientConnection, frame: str, named: str
) -> None:
    handled = len(server.dispatcher.handled)
    await client.send(frame)
    [body] = await recv_json(client, "435")
    assert_envelope(body, 400, "INVALID")
    assert body["message"].startswith(f"{named}:")
    assert len(server.dispatcher.handled) == handled  # never reached the dispatcher
