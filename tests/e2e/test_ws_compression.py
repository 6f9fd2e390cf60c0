"""``WS_COMPRESSION``: websocket compression (permessage-deflate) is refused by default, so
each change is framed once per socket without a compressor per connection; turned on, a
client that offers it gets it, and events still arrive."""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect

from tests.e2e.live import process_env, server_process

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(("setting", "negotiated"), [(None, False), ("true", True)])
async def test_compression_is_negotiated_only_when_turned_on(
    mongodb_url, tmp_path, setting, negotiated
):
    extra = {"WS_COMPRESSION": setting} if setting else {}
    env = process_env(mongodb_url, tmp_path / "data", "wscompression", **extra)
    async with server_process(env, tmp_path / "server.log") as url:
        ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        async with connect(ws_url, compression="deflate", open_timeout=10) as ws:
            offered = ws.response.headers.get("Sec-WebSocket-Extensions")
            assert (offered is not None and "permessage-deflate" in offered) is negotiated
            opened = await ws.recv()
            assert isinstance(opened, str) and opened.startswith("0")
            assert json.loads(opened[1:])["pingInterval"] > 0
