"""Sockets are kept alive by Engine.IO's heartbeat alone: the server (with ``python -m app``'s
uvicorn options) schedules no websocket-level ping per connection, which would double the
heartbeat's work and, for sockets that connect together, come in one burst."""

from __future__ import annotations

import asyncio

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import connect

pytestmark = pytest.mark.asyncio


async def test_no_websocket_pings_are_scheduled(live):
    url = live.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with connect(url, open_timeout=10) as ws:
        opened = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(opened, str) and opened.startswith("0")  # Engine.IO's own open
        sockets = [
            connection
            for connection in live.server.server_state.connections
            if isinstance(connection, WebSocketsSansIOProtocol)
        ]
        assert sockets, "the websocket is served by uvicorn's websockets-sansio protocol"
        assert all(s.handshake_complete and s.ping_timer is None for s in sockets)
