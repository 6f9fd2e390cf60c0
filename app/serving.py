"""uvicorn's server, telling the app when it starts to stop.

uvicorn stops in three steps: it closes its listening sockets, waits for the requests under
way to finish, then runs the lifespan's shutdown. A long-polling Socket.IO request is under
way until its session has something to send, up to a ping interval (25 s): left alone, each
restart would wait that long. Between the first two steps this server awaits ``drain`` (the
hub's), which answers those polls with a close, so that a restart takes as long as the
ordinary requests under way.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import uvicorn


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._drain = drain

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # New connections first: a client told to reconnect must not reach this process.
        # (uvicorn closes them again in its own shutdown; closing twice does nothing.)
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        await self._drain()
        await super().shutdown(sockets)
