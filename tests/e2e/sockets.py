"""A python-socketio client that records what the server pushes, for realtime tests."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

import socketio

WAIT = 5.0


class Listener:
    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.changes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.disconnected = asyncio.Event()
        self.sio.on("change", self.changes.put_nowait)
        self.sio.on("disconnect", lambda *_: self.disconnected.set())

    async def subscribe(self, **options: Any) -> dict[str, Any]:
        ack: dict[str, Any] = await self.sio.call("subscribe", options, timeout=WAIT)
        return ack

    async def next(self, wait: float = WAIT) -> dict[str, Any]:
        return await asyncio.wait_for(self.changes.get(), wait)

    async def nothing(self, within: float = 0.7) -> None:
        """Assert no change arrives for a while."""
        try:
            extra = await asyncio.wait_for(self.changes.get(), within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected change: {extra}")


@asynccontextmanager
async def listening(url: str, **connect: Any):
    listener = Listener()
    await listener.sio.connect(url, transports=["websocket"], wait_timeout=WAIT, **connect)
    try:
        yield listener
    finally:
        await listener.sio.disconnect()


def token_of(user: Any) -> str:
    return str(user.client.headers["authorization"].split()[1])
