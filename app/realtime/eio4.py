"""Engine.IO v4 / Socket.IO v4 straight over a websocket: the fast lane for realtime.

A client that opens ``/socket.io/?EIO=4&transport=websocket`` (socket.io-client or
python-socketio with ``transports: ["websocket"]``) is served here; one that starts with
long-polling (and may upgrade later) is served by python-socketio (see ``router.py``). Both hand
their clients to the same ``Dispatcher``. This front exists for the cost of a delivery: a change
event goes from the hub's per-socket queue to the ASGI send as one ready-made text frame, with
no packet objects and no second queue and writer task per socket.

The wire, as socket.io-client v4 expects it:

- Open: ``0{"sid", "upgrades": [], "pingInterval", "pingTimeout", "maxPayload"}``.
- Connect: the client sends ``40`` or ``40{auth}``. The credentials (the ``auth`` payload,
  headers, ``?token=``, cookie) are checked then: ``40{"sid": ...}`` on success, otherwise
  ``44{"message", "data": <error envelope>}`` (the client's ``connect_error``) and the websocket
  is closed. Another namespace gets ``44/ns,{"message": "Invalid namespace"}``.
- Heartbeat, server-driven: ``2`` every ``pingInterval``; a client that has not answered ``3``
  within ``pingTimeout`` is closed. One task per front checks every connection (no timer per
  socket).
- Events: ``42[name, data]`` or ``42<ack>[...]``, answered ``43<ack>[reply]``, handled one at a
  time in arrival order. A malformed event with an ack id gets its error envelope in the ack;
  without one it is dropped (in v4 a ``44`` would end the client's session).
- ``41`` from the client, or Engine.IO ``1``, ends the connection; ``Peer.close()`` sends ``41``
  first, which tells the client not to reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from app import jsonio
from app.errors import APIError, BadRequest, Internal
from app.realtime.outbox import run_now
from app.realtime.peers import Dispatcher, SocketAuthenticator
from app.realtime.wire import (
    DEFAULT_NAMESPACE,
    Packet,
    WirePeer,
    WireSocket,
    event_args,
    json_text,
    parse_packet,
    request_headers,
)

logger = logging.getLogger(__name__)

_PING = "2"


class _Connection:
    """One websocket's heartbeat state and, once its connect succeeded, its peer."""

    __slots__ = ("connect_by", "next_ping", "peer", "pong_due", "socket")

    def __init__(self, socket: WireSocket, next_ping: float, connect_by: float) -> None:
        self.socket = socket
        self.peer: WirePeer | None = None
        self.next_ping = next_ping
        self.pong_due: float | None = None
        self.connect_by = connect_by


class EIO4Front:
    """ASGI app serving Engine.IO v4 websocket connections to ``dispatcher``."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        authenticate: SocketAuthenticator,
        ping_interval_ms: int = 25000,
        ping_timeout_ms: int = 60000,
        max_payload: int = 1024 * 1024,
        connect_wait_ms: int = 10000,
    ) -> None:
        self._dispatcher = dispatcher
        # A websocket that has not connected (sent valid credentials) by then is closed: one
        # that only answers pings would otherwise hold its file descriptor for ever.
        self._connect_wait = connect_wait_ms / 1000
        self._authenticate = authenticate
        self._interval = ping_interval_ms / 1000
        self._timeout = ping_timeout_ms / 1000
        self._handshake = {
            "upgrades": [],
            "pingInterval": ping_interval_ms,
            "pingTimeout": ping_timeout_ms,
            "maxPayload": max_payload,
        }
        self._connections: set[_Connection] = set()
        self.opening = 0  # websockets accepted whose Socket.IO connect has not succeeded
        self._heartbeat: asyncio.Task[None] | None = None
        self._pings: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or (await receive())["type"] != "websocket.connect":
            return
        socket = WireSocket(send)
        opened = time.monotonic()
        connection = _Connection(socket, self.first_ping(opened), opened + self._connect_wait)
        self.opening += 1  # until the connect succeeds (_connect) or the socket closes
        try:
            await socket.send({"type": "websocket.accept"})
            handshake = {"sid": secrets.token_urlsafe(15), **self._handshake}
            await socket.send_text("0" + json_text(handshake))
            self._connections.add(connection)
            self._keep_heartbeat()
            await self._serve(connection, scope, receive)
        finally:
            socket.gone()
            self._connections.discard(connection)
            if connection.peer is None:
                self.opening -= 1
            else:
                await self._dispatcher.detach(connection.peer)

    # --- heartbeat -------------------------------------------------------------------------

    def first_ping(self, now: float) -> float:
        """When a new connection gets its first ping: somewhere in the second half of the
        interval, so sockets that connect together (a page load, a reconnect storm) are not
        pinged together ever after; a sweep of thousands of pings costs as much CPU as a
        fan-out to them. Pinging sooner than the interval is always allowed."""
        return now + self._interval * (0.5 + 0.5 * random.random())  # noqa: S311 - not a secret

    def _keep_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat(), name="eio4-heartbeat")

    async def _beat(self) -> None:
        """Ping each connection every interval; close the ones whose pong is overdue, and
        those still not connected after the connect wait. Ends when no connection is left
        (the next one starts it again)."""
        tick = min(1.0, self._interval / 5, self._connect_wait / 2)
        while self._connections:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for connection in list(self._connections):
                if connection.socket.closing:
                    continue  # its close is under way (bounded: WireSocket.close)
                if connection.peer is None and now > connection.connect_by:
                    self._spawn(connection.socket.close(1008, "no connect"))
                    continue
                if connection.pong_due is not None:
                    if now > connection.pong_due:
                        self._spawn(connection.socket.close(1000, "ping timeout"))
                elif now >= connection.next_ping:
                    connection.pong_due = now + self._timeout
                    self._spawn(connection.socket.send_text(_PING))

    def _spawn(self, work: Any) -> None:
        # Run at once (almost every ping is written without waiting); a send that has to wait
        # on a slow client's socket goes on as a task, never in the heartbeat loop itself.
        try:
            task = run_now(work)
        except Exception:  # the socket is going away: its own loop ends it
            return
        if task is not None:
            self._pings.add(task)
            task.add_done_callback(self._pings.discard)

    # --- frames ----------------------------------------------------------------------------

    async def _serve(self, connection: _Connection, scope: Scope, receive: Receive) -> None:
        """Read frames until the client leaves or asks to close."""
        while not connection.socket.closed:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text") if message["type"] == "websocket.receive" else None
            if text is None:
                continue  # binary frames carry nothing this server accepts
            kind, body = text[:1], text[1:]
            if kind == "3":
                connection.pong_due = None
                connection.next_ping = time.monotonic() + self._interval
            elif kind == "4":
                if not await self._on_message(connection, scope, body):
                    return
            elif kind == "2":  # a probe; v4 clients do not ping otherwise
                await connection.socket.send_text("3" + body)
            elif kind == "1":
                await connection.socket.close(1000, "")
                return

    async def _on_message(self, connection: _Connection, scope: Scope, body: str) -> bool:
        """Handle one Socket.IO packet; False once the connection is to end."""
        socket = connection.socket
        try:
            packet = parse_packet(body)
        except BadRequest as error:
            logger.debug("eio4: malformed packet %.80r: %s", body, error.message)
            return True
        if packet.namespace != DEFAULT_NAMESPACE:
            if packet.kind in ("0", "2"):
                invalid = json_text({"message": "Invalid namespace"})
                await socket.send_text(f"44{packet.namespace},{invalid}")
            return True
        if packet.kind == "0":
            return connection.peer is not None or await self._connect(connection, scope, packet)
        if packet.kind == "1":
            await socket.close(1000, "")
            return False
        if packet.kind == "2" and connection.peer is not None:
            await self._on_event(connection.peer, packet)
        return True

    async def _connect(self, connection: _Connection, scope: Scope, packet: Packet) -> bool:
        socket = connection.socket
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), True))
        try:
            auth = jsonio.loads(packet.data) if packet.data else None
            principal = await self._authenticate(request_headers(scope), query, auth)
            peer = WirePeer(principal, socket)
            self._dispatcher.attach(peer)  # refused past the socket limits
        except (APIError, ValueError) as exc:
            error = exc if isinstance(exc, APIError) else BadRequest("The auth payload is not JSON")
            refusal = {"message": error.message, "data": error.body()}
            await socket.send_text("44" + json_text(refusal))
            await socket.close(1008 if error.status < 500 else 1011, error.code.value)
            return False
        connection.peer = peer
        self.opening -= 1
        await socket.send_text("40" + json_text({"sid": secrets.token_urlsafe(15)}))
        return True

    async def _on_event(self, peer: WirePeer, packet: Packet) -> None:
        try:
            event, data = event_args(packet.data)
            ack = await self._dispatcher.handle(peer, event, data)
        except APIError as error:
            ack = error.body()
        except Exception:
            logger.exception("eio4: dispatcher failed on %r", packet.data[:80])
            ack = Internal().body()
        if packet.ack_id is not None:
            await peer.socket.send_text(f"43{packet.ack_id}{json_text([ack])}")
