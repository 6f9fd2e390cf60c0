"""The EIO=4 front: python-socketio serves Socket.IO v3/v4 clients and hands them to the hub."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import traceback
from typing import Any
from urllib.parse import parse_qsl

import orjson
import socketio
from engineio import packet as eio_packet  # type: ignore[import-untyped]

from app import jsonio
from app.acl import Principal
from app.errors import APIError, Invalid, Unauthorized
from app.realtime.peers import Dispatcher, SocketAuthenticator

log = logging.getLogger(__name__)

PING_INTERVAL_S = 25
PING_TIMEOUT_S = 60
CONNECT_WAIT_S = 10.0  # an Engine.IO session that has not connected by then is closed


class _Server(socketio.AsyncServer):  # type: ignore[misc]  # (no type hints)
    """python-socketio's server, closing an Engine.IO session whose Socket.IO connect
    (credentials) has not come within ``CONNECT_WAIT_S``: answering pings alone would hold
    it, and its memory, for ever. (Our own EIO=4 front does the same for its websockets.)"""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.peers: dict[str, SioPeer] = {}  # by Socket.IO sid: the sessions that connected

    def opening(self) -> int:
        """Engine.IO sessions open but not (yet) connected."""
        return max(0, len(self.eio.sockets) - len(self.peers))

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        result = await super()._handle_eio_connect(eio_sid, environ)
        asyncio.get_running_loop().call_later(CONNECT_WAIT_S, self._check_connected, eio_sid)
        return result

    async def _handle_event(self, eio_sid: str, namespace: str, id: Any, data: Any) -> None:
        # Socket.IO reserves these names (its clients refuse to emit them); python-socketio
        # would hand such an event to our connect or disconnect handler, with arguments the
        # client chose, and a connect run again attaches the socket again.
        if not isinstance(data, list) or not data:
            return  # an event without a name (python-socketio would fail on it)
        if data[0] in _RESERVED_EVENTS:
            log.debug("dropped a client event named %r", data[0])
            return
        await super()._handle_event(eio_sid, namespace, id, data)

    def _check_connected(self, eio_sid: str) -> None:
        if self.manager.sid_from_eio_sid(eio_sid, "/") is None:
            self.end_session(eio_sid)

    def end_session(self, eio_sid: str) -> None:
        """End an Engine.IO session now: it is forgotten at once (its memory, and its place
        among the sessions opening), and its close is queued for a poll still to come.
        (``eio.disconnect`` would keep it until a poll has taken the close, which a client
        that never polls again never does.)"""
        session = self.eio.sockets.pop(eio_sid, None)
        if session is not None:
            # The close is queued now, so that a poll under way is answered at once whatever
            # closes the session first (a close from the client answers no poll).
            session.queue.put_nowait(eio_packet.Packet(eio_packet.CLOSE))
            reason = self.eio.reason.SERVER_DISCONNECT
            task = asyncio.ensure_future(session.close(wait=False, abort=True, reason=reason))
            _closing.add(task)
            task.add_done_callback(_closing.discard)


_closing: set[asyncio.Future[Any]] = set()
_RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting"})


async def end_sessions(server: _Server) -> None:
    """End every Engine.IO session ``server`` holds, long-polling or upgraded, as a transport
    close: clients reconnect, as after any restart. A long poll waiting for its next packet is
    answered with the close at once; left alone it would hold a stopping server for up to a
    ping interval."""
    for eio_sid in list(server.eio.sockets):
        server.end_session(eio_sid)


class _OneLine(logging.Filter):
    """python-engineio and python-socketio log a whole traceback for every malformed payload a
    client sends (invalid UTF-8, too many packets, broken JSON, an event without data): a
    flood any client could make, even one that never signed in. That is bad input, not a
    server fault: one line each, at WARNING, naming the exception. A fault that ends in our
    own code keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or _ours(exc):
            return True
        record.msg = f"{record.getMessage()}: {type(exc).__name__}: {str(exc)[:200]}"
        record.args = None
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _ours(exc: BaseException) -> bool:
    """Whether ``exc`` was raised in this project's code, and is not a decoding error."""
    if isinstance(exc, ValueError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and f"{os.sep}app{os.sep}" in frames[-1].filename


for _name in ("engineio.server", "socketio.server"):
    logging.getLogger(_name).addFilter(_OneLine())


class _OutOfRange:
    """Stands for an event argument that held an integer beyond 64 bits; the event is answered
    with 400 INVALID naming ``path`` instead of reaching the hub."""

    def __init__(self, path: str):
        self.path = path


class _OrjsonModule:
    """The ``json`` interface python-socketio expects, backed by ``app.jsonio``."""

    @staticmethod
    def dumps(value: Any, **_: Any) -> str:
        try:
            return orjson.dumps(value).decode()
        except TypeError:  # python-socketio sets this module for clients in the process too
            return json.dumps(value, separators=(",", ":"))

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        try:
            return jsonio.loads(text)
        except jsonio.OutOfRange as exc:
            # An event packet is ["name", arg, ...]: keep the name so the event can be
            # answered (with its ack), and replace the argument by the refusal.
            parsed = orjson.loads(text)
            if isinstance(parsed, list) and parsed and isinstance(parsed[0], str):
                return [parsed[0], _OutOfRange(exc.in_event_argument())]
            raise


class SioPeer:
    def __init__(self, server: socketio.AsyncServer, sid: str, principal: Principal):
        self.server = server
        self.sid = sid
        self.principal = principal

    async def emit(self, event: str, data: dict[str, Any]) -> None:
        try:
            await self.server.emit(event, data, to=self.sid)
        except Exception:  # the socket went away meanwhile
            log.debug("emit to %s failed", self.sid, exc_info=True)

    async def emit_encoded(self, event: str, data: str) -> None:
        # A Socket.IO v4 EVENT packet for the default namespace is "2" + the JSON array; it
        # goes straight to Engine.IO, skipping python-socketio's re-encoding and binary scan.
        eio_sid = self.server.manager.eio_sid_from_sid(self.sid, "/")
        if eio_sid is None:
            return
        try:
            await self.server.eio.send(eio_sid, f"2[{orjson.dumps(event).decode()},{data}]")
        except Exception:  # the socket went away meanwhile
            log.debug("emit to %s failed", self.sid, exc_info=True)

    def emit_now(self, event: str, data: str) -> bool:
        return False  # python-socketio writes its own packets

    async def close(self) -> None:
        await self.server.disconnect(self.sid)


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {
        key[5:].lower().replace("_", "-"): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if "CONTENT_TYPE" in environ:
        headers["content-type"] = str(environ["CONTENT_TYPE"])
    return headers


def build_server(
    dispatcher: Dispatcher,
    authenticate: SocketAuthenticator,
    cors_origins: tuple[str, ...],
    max_message_bytes: int = 1024 * 1024,
    polling: bool = True,
) -> _Server:
    server = _Server(
        # Long-polling keeps a session in one process across many requests; with several
        # worker processes on one port those requests could reach another one.
        transports=["polling", "websocket"] if polling else ["websocket"],
        async_mode="asgi",
        json=_OrjsonModule,
        ping_interval=PING_INTERVAL_S,
        ping_timeout=PING_TIMEOUT_S,
        cors_allowed_origins=list(cors_origins) or None,
        max_http_buffer_size=max_message_bytes,
        # A socket's events one at a time, in order, as on our own fronts (side by side, two
        # subscribes could both pass the subscription limit).
        async_handlers=False,
    )
    peers = server.peers

    @server.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        query = dict(parse_qsl(str(environ.get("QUERY_STRING", ""))))
        try:
            principal = await authenticate(_headers(environ), query, auth)
            peer = SioPeer(server, sid, principal)
            dispatcher.attach(peer)  # refused past the socket limits
        except APIError as error:
            raise socketio.exceptions.ConnectionRefusedError(error.message, error.body()) from None
        peers[sid] = peer

    @server.event
    async def disconnect(sid: str, *_: Any) -> None:
        # A session whose Socket.IO connection ended (the client's 41 too) ends its Engine.IO
        # session, as on our own fronts: kept, it would answer pings with nothing connected.
        eio_sid = server.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is not None:
            server.end_session(eio_sid)
        peer = peers.pop(sid, None)
        if peer is not None:
            await dispatcher.detach(peer)

    @server.on("*")
    async def any_event(event: str, sid: str, data: Any = None, *_: Any) -> dict[str, Any]:
        peer = peers.get(sid)
        if peer is None:
            return Unauthorized().body()
        if isinstance(data, _OutOfRange):
            return Invalid(data.path, "integers must fit in 64 bits").body()
        return await dispatcher.handle(peer, event, data)

    return server
