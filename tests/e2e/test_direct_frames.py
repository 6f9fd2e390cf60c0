"""Change frames written straight to uvicorn's transport (app/realtime/frames.py), against a
real uvicorn with the websockets-sansio protocol (what ``python -m app`` runs) and a real
websocket client: the frames are valid whatever their size, the direct path steps aside for
compression, a paused transport and a closed socket, and nothing is lost or reordered when it
does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import OPEN
from websockets.uri import parse_uri

from app.realtime.frames import text_frame
from app.realtime.outbox import Outbox
from app.realtime.wire import WirePeer
from tests.e2e.asgi_server import serving
from tests.e2e.test_eio3_protocol import TIMEOUT, eventually, recv, recv_json
from tests.e2e.test_eio4_protocol import Server

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def server() -> AsyncIterator[Server]:
    live = Server()
    async with serving(live.app, ws="websockets-sansio") as port:
        live.port = port
        yield live


async def connected(server: Server, **options: object) -> tuple[ClientConnection, WirePeer]:
    ws = await connect(server.url(), open_timeout=TIMEOUT, max_size=None, **options)  # type: ignore[arg-type]
    await recv_json(ws, "0")
    await ws.send('40{"token":"good"}')
    await recv_json(ws, "40")
    peer = server.dispatcher.attached[-1]
    assert isinstance(peer, WirePeer)
    return ws, peer


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
async def test_a_text_frame_of_any_size_parses_as_one_whole_text_message(size: int) -> None:
    payload = ("é" * (size // 2) + "x" * (size % 2)).encode()
    client = ClientProtocol(parse_uri("ws://127.0.0.1/"), state=OPEN, max_size=None)
    frame = text_frame(payload)
    client.receive_data(frame[:3])  # split, as TCP may deliver it
    client.receive_data(frame[3:])
    [received] = client.events_received()
    assert received.opcode is Opcode.TEXT and received.fin
    assert received.data == payload


async def test_change_frames_go_straight_to_the_transport(server: Server) -> None:
    ws, peer = await connected(server, compression=None)
    try:
        for n in range(3):
            assert peer.emit_now("change", f'{{"n":{n}}}')
        big = "y" * 70_000  # past the 16-bit length
        assert peer.emit_now("change", f'{{"big":"{big}"}}')
        assert [await recv_json(ws, "42") for _ in range(3)] == [
            ["change", {"n": n}] for n in range(3)
        ]
        assert await recv_json(ws, "42") == ["change", {"big": big}]
        # The ASGI path still works beside it, in order.
        await peer.emit_encoded("change", '{"n":3}')
        assert peer.emit_now("change", '{"n":4}')
        assert [await recv_json(ws, "42") for _ in range(2)] == [
            ["change", {"n": 3}],
            ["change", {"n": 4}],
        ]
    finally:
        await ws.close()


async def test_a_compressed_connection_takes_the_asgi_path(server: Server) -> None:
    ws, peer = await connected(server)  # the client offers permessage-deflate by default
    try:
        assert not peer.emit_now("change", '{"n":1}')
        await peer.emit_encoded("change", '{"n":1}')
        assert await recv_json(ws, "42") == ["change", {"n": 1}]
    finally:
        await ws.close()


async def test_a_closed_socket_takes_and_drops_frames(server: Server) -> None:
    ws, peer = await connected(server, compression=None)
    await peer.close()
    assert await recv(ws) == "41"
    await ws.wait_closed()
    assert peer.emit_now("change", '{"late":true}')  # taken, dropped, no error


async def test_a_client_that_stops_reading_pauses_the_direct_path_and_loses_nothing(
    server: Server,
) -> None:
    """Once uvicorn's buffer for the socket is past its high-water mark, frames go through
    the outbox's waiting write, as the ASGI send waits for the buffer to drain; all arrive,
    in order, once the client reads again."""
    ws, peer = await connected(server, compression=None, max_queue=1)
    closed: list[int] = []
    outbox = Outbox(
        lambda payload: peer.emit_encoded("change", payload),
        10_000,
        lambda: closed.append(1),
        now=lambda payload: peer.emit_now("change", payload),
    )
    filler = "z" * 60_000
    sent = 0
    try:
        # The client reads nothing now: the kernel's buffers, then uvicorn's, fill up.
        while sent < 2000 and outbox._drainer is None:
            outbox.put(f'{{"n":{sent},"f":"{filler}"}}')
            sent += 1
            await asyncio.sleep(0)
        assert outbox._drainer is not None, "the transport never paused"
        for _ in range(20):  # more while paused: these queue behind the waiting write
            outbox.put(f'{{"n":{sent},"f":"{filler}"}}')
            sent += 1
        received = []
        while len(received) < sent:
            received.append((await recv_json(ws, "42"))[1]["n"])
        assert received == list(range(sent))
        assert closed == []
        await eventually(lambda: outbox._drainer is None)
        assert peer.emit_now("change", '{"n":-1}')  # drained: direct again
        assert (await recv_json(ws, "42"))[1] == {"n": -1}
    finally:
        await outbox.close()
        await ws.close()
