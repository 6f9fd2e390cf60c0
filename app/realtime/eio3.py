"""Engine.IO v3 / Socket.IO v2 over a websocket, for clients written against the older spec.

python-engineio 4+ no longer speaks Engine.IO v3, so ``EIO=3`` websocket connections are served
here and handed to the same ``Dispatcher`` as the python-socketio front (see ``peers.py``).

Framing: one Engine.IO packet per text frame, its first character the packet type (``0`` open,
``1`` close, ``2`` ping, ``3`` pong, ``4`` message, ``5`` upgrade, ``6`` noop). A message carries a
Socket.IO v2 packet: type digit, optional ``/namespace,``, optional ack id digits, JSON data.

Decisions:

- Only ``websocket`` is served. Long-polling (an ``http`` request) gets Engine.IO's own
  ``400 {"code": 3, "message": "Bad request"}``; v2 clients must connect with
  ``transports: ["websocket"]``.
- A refused connection (the authenticator raised an ``APIError``) still receives the open packet
  first, because a v2 client drops messages that arrive before the handshake; then ``44`` + the
  error envelope (the client's ``error`` event), then a close frame (1008, or 1011 for 5xx).
- Ping/pong is client-driven: ``2<x>`` is answered ``3<x>`` (``2probe`` -> ``3probe``). Any frame
  counts as life; a client silent for pingInterval + pingTimeout is closed without ``41`` so
  it reconnects. ``Peer.close()`` sends ``41`` first, which tells a v2 client not to reconnect.
- Only the default namespace is served: ``40/x,`` or ``42/x,[...]`` is answered
  ``44/x,"Invalid namespace"``; ``40`` and ``41/x,`` are ignored (``/`` is connected on open).
- Events are handled one at a time in the receive loop, in arrival order. An event with an ack id
  gets ``43<id>[ack]``; a dispatcher error becomes its envelope in the ack (or in ``44``).
- Anything undecodable (empty frame, unknown packet type, bad JSON, binary frame or binary
  packet) is answered with ``44`` + a BAD_REQUEST envelope (in the ack when the packet carried an
  ack id) and the connection stays open. Client acks (``43``), client errors (``44``), pongs,
  upgrades and noops are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from urllib.parse import parse_qsl

import orjson
from starlette.types import Receive, Scope, Send

from app.errors import APIError, BadRequest, Internal
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

_HTTP_BODY = orjson.dumps({"code": 3, "message": "Bad request"})


class EIO3Front:
    """ASGI app serving Engine.IO v3 websocket connections to ``dispatcher``."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        authenticate: SocketAuthenticator,
        ping_interval_ms: int = 25000,
        ping_timeout_ms: int = 60000,
    ) -> None:
        self._dispatcher = dispatcher
        self._authenticate = authenticate
        self._ping_interval_ms = ping_interval_ms
        self._ping_timeout_ms = ping_timeout_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await _refuse_http(send)
            return
        if scope["type"] != "websocket" or (await receive())["type"] != "websocket.connect":
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), True))
        if query.get("EIO") != "3":
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        socket = WireSocket(send)
        try:
            principal = await self._authenticate(request_headers(scope), query, None)
            peer = WirePeer(principal, socket)
            self._dispatcher.attach(peer)  # refused past the socket limits
        except APIError as error:
            await self._open(socket)
            await socket.send_text("44" + json_text(error.body()))
            await socket.close(1008 if error.status < 500 else 1011, error.code.value)
            return
        try:
            await self._open(socket)
            await socket.send_text("40")
            await self._serve(peer, receive)
        finally:
            socket.gone()
            await self._dispatcher.detach(peer)

    async def _open(self, socket: WireSocket) -> None:
        await socket.send({"type": "websocket.accept"})
        handshake = {
            "sid": secrets.token_urlsafe(15),
            "upgrades": [],
            "pingInterval": self._ping_interval_ms,
            "pingTimeout": self._ping_timeout_ms,
        }
        await socket.send_text("0" + json_text(handshake))

    async def _serve(self, peer: WirePeer, receive: Receive) -> None:
        """Read frames until the client leaves, asks to close, or falls silent."""
        silence = (self._ping_interval_ms + self._ping_timeout_ms) / 1000
        while not peer.socket.closed:
            try:
                async with asyncio.timeout(silence):
                    message = await receive()
            except TimeoutError:
                await peer.socket.close(1000, "ping timeout")
                return
            if message["type"] == "websocket.disconnect":
                return
            if message["type"] != "websocket.receive":
                continue
            text = message.get("text")
            if text is None:
                await _send_error(peer, None, BadRequest("Binary frames are not supported"))
            elif not await self._on_frame(peer, text):
                return

    async def _on_frame(self, peer: WirePeer, text: str) -> bool:
        """Handle one Engine.IO packet; False once the connection is to end."""
        kind, body = text[:1], text[1:]
        if kind == "2":
            await peer.socket.send_text("3" + body)
        elif kind == "4":
            return await self._on_message(peer, body)
        elif kind == "1":
            await peer.socket.close(1000, "")
            return False
        elif kind not in ("0", "3", "5", "6"):
            await _send_error(peer, None, BadRequest("Unknown Engine.IO packet"))
        return True

    async def _on_message(self, peer: WirePeer, body: str) -> bool:
        try:
            packet = parse_packet(body)
        except BadRequest as error:
            logger.debug("eio3: malformed packet %.80r: %s", body, error.message)
            await _send_error(peer, None, error)
            return True
        if packet.namespace != DEFAULT_NAMESPACE:
            if packet.kind in ("0", "2"):
                invalid = json_text("Invalid namespace")
                await peer.socket.send_text(f"44{packet.namespace},{invalid}")
            return True
        if packet.kind == "1":
            await peer.socket.close(1000, "")
            return False
        if packet.kind == "2":
            await self._on_event(peer, packet)
        return True

    async def _on_event(self, peer: WirePeer, packet: Packet) -> None:
        try:
            event, data = event_args(packet.data)
        except APIError as error:
            await _send_error(peer, packet.ack_id, error)
            return
        try:
            ack = await self._dispatcher.handle(peer, event, data)
            reply = json_text([ack])
        except APIError as error:
            await _send_error(peer, packet.ack_id, error)
            return
        except Exception:
            logger.exception("eio3: dispatcher failed on %r", event)
            await _send_error(peer, packet.ack_id, Internal())
            return
        if packet.ack_id is not None:
            await peer.socket.send_text(f"43{packet.ack_id}{reply}")


async def _send_error(peer: WirePeer, ack_id: str | None, error: APIError) -> None:
    if ack_id is None:
        await peer.socket.send_text("44" + json_text(error.body()))
    else:
        await peer.socket.send_text(f"43{ack_id}" + json_text([error.body()]))


async def _refuse_http(send: Send) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_HTTP_BODY))]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": _HTTP_BODY})
