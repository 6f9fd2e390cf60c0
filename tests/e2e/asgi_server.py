"""A bare ASGI app served by a real uvicorn on a free 127.0.0.1 port, for wire-level tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.types import ASGIApp


@asynccontextmanager
async def serving(app: ASGIApp, ws: str = "auto") -> AsyncIterator[int]:
    """Serve ``app`` until the block ends (``ws``: uvicorn's websocket protocol); yields the
    port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, interface="asgi3", lifespan="off", log_config=None, log_level="warning", ws=ws
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 5)
        sock.close()
