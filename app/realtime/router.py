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
    ):
        self.app = app

        async def authenticate(
            headers: Mapping[str, str], query: Mapping[str, str], auth: Any
        ) -> Principal:
            credentials = hub.require_services().credentials
            return await socket_principal(credentials, cors_origins, headers, query, auth)

        self.eio3 = EIO3Front(hub, authenticate)
        self.eio4 = EIO4Front(hub, authenticate, max_payload=max_message_bytes)
        server = build_server(hub, authenticate, cors_origins, max_message_bytes, polling)
        self.sio: ASGIApp = socketio.ASGIApp(server, socketio_path="socket.io")
        # Our own fronts' websockets are closed by uvicorn (1012) when it stops; the sessions
        # python-socketio holds are ended by it (a long poll would keep the server waiting).
        hub.on_drain(functools.partial(end_sessions, server))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] in ("http", "websocket") and (path == PATH or path.startswith(PATH + "/")):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            await self._front(scope["type"], query)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _front(self, kind: str, query: dict[str, list[str]]) -> ASGIApp:
        version = query.get("EIO")
        if version == ["3"]:
            return self.eio3
        if version == ["4"] and kind == "websocket" and "sid" not in query:
            return self.eio4
        return self.sio
