"""Sends ``/socket.io/`` to the right front: ``EIO=3`` to our Engine.IO v3 layer, an ``EIO=4``
websocket opened directly to our Engine.IO v4 layer, everything else (long-polling, and the
websocket a polling session upgrades to) to python-socketio; all other traffic goes on to the
REST app."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import socketio
from starlette.types import ASGIApp, Receive, Scope, Send

from app.acl import Principal
from app.auth import socket_principal
from app.errors import APIError, Unavailable
from app.middleware import render, scope_request_id
from app.realtime.eio3 import EIO3Front
from app.realtime.eio4 import EIO4Front
from app.realtime.hub import Hub
from app.realtime.sio import build_server, end_sessions

PATH = "/socket.io"


class SocketRouter:
    def __init__(
        self,
        app: ASGIApp,
        hub: Hub,
        cors_origins: tuple[str, ...] = (),
        max_message_bytes: int = 1024 * 1024,
        polling: bool = True,
        max_opening: int = 1000,
    ):
        self.app = app
        self.max_opening = max_opening

        async def authenticate(
            headers: Mapping[str, str], query: Mapping[str, str], auth: Any
        ) -> Principal:
            credentials = hub.require_services().credentials
            return await socket_principal(credentials, cors_origins, headers, query, auth)

        self.eio3 = EIO3Front(hub, authenticate)
        self.eio4 = EIO4Front(hub, authenticate, max_payload=max_message_bytes)
        server = build_server(hub, authenticate, cors_origins, max_message_bytes, polling)
        self.server = server
        self.sio: ASGIApp = socketio.ASGIApp(server, socketio_path="socket.io")
        # Our own fronts' websockets are closed by uvicorn (1012) when it stops; the sessions
        # python-socketio holds are ended by it (a long poll would keep the server waiting).
        hub.on_drain(functools.partial(end_sessions, server))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] in ("http", "websocket") and (path == PATH or path.startswith(PATH + "/")):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            front = self._front(scope["type"], query)
            if front is not self.eio3 and "sid" not in query and self._full():
                await refuse(scope, receive, send, self._opening_error())
                return
            await front(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _front(self, kind: str, query: dict[str, list[str]]) -> ASGIApp:
        version = query.get("EIO")
        if version == ["3"]:
            return self.eio3
        if version == ["4"] and kind == "websocket" and "sid" not in query:
            return self.eio4
        return self.sio

    def _full(self) -> bool:
        """Whether ``max_opening`` sessions are open without having connected. Such a session
        holds memory (and a websocket, a file descriptor) for up to the connect wait with no
        credentials shown; connected ones are bounded by the hub's limits. (Our EIO=3 front
        checks the credentials before it opens anything.)"""
        return self.eio4.opening + self.server.opening() >= self.max_opening

    def _opening_error(self) -> APIError:
        return Unavailable(
            f"{self.max_opening} Socket.IO connections are opening on this server process "
            "(MAX_SOCKETS_OPENING); connect again shortly",
            retry_after=1,
        )


async def refuse(scope: Scope, receive: Receive, send: Send, error: APIError) -> None:
    """Answer a new Socket.IO session with ``error`` rendered as every API error is: an HTTP
    response, for a websocket too where the server can send one (ASGI's denial response;
    uvicorn can), else the websocket is closed before it is accepted (HTTP 403)."""
    response = render(error, scope_request_id(scope))
    if scope["type"] == "websocket":
        if (await receive())["type"] != "websocket.connect":
            return
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1013})
            return
    await response(scope, receive, send)
