"""How many sockets one user, and one server process, may hold: past either limit a connect
is refused with the error envelope (429 for the user's, 503 for the process's), and a socket
that closes frees its place. Real python-socketio clients, over our websocket front and over
python-socketio's long-polling front."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import socketio

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
