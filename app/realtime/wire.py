"""What our own Socket.IO websocket fronts (``eio3.py``, ``eio4.py``) share: one serialised
ASGI websocket, the Socket.IO packet syntax, and event arguments.

Socket.IO v2 and v4 write a packet the same way: a type digit (``0`` connect, ``1`` disconnect,
``2`` event, ``3`` ack, ``4`` error / connect error, ``5``/``6`` binary), an optional
``/namespace,``, optional ack id digits, then JSON data. Each Engine.IO packet travels in one
text frame, its first character the Engine.IO type (``4`` message carries a Socket.IO packet).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import Scope, Send

from app import jsonio
from app.acl import Principal
from app.errors import BadRequest, Invalid
from app.realtime.frames import DirectFrames

DEFAULT_NAMESPACE = "/"
_CHANGE = '42["change",'  # the frame of every change event, up to its data
_DIGITS = "0123456789"
_MAX_ACK_ID_DIGITS = 16


CLOSE_WAIT_S = 5.0  # how long a close waits for a send under way before it cuts the connection


class WireSocket:
    """Serialises sends to one ASGI websocket; a send after the client has gone is dropped.

    A send waits while the connection's buffer is full, which is for ever if the client has
    stopped reading. A close waits for it at most ``CLOSE_WAIT_S``, then cuts the connection
    (on uvicorn; see ``DirectFrames.abort``): the one way to free such a socket, its queued
    events and the send itself. Closing a socket that is closing already does nothing."""

    __slots__ = ("_direct", "_lock", "_send", "closed", "closing")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._lock = asyncio.Lock()
        self._direct = DirectFrames.of(send)
        self.closed = False
        self.closing = False

    def gone(self) -> None:
        self.closed = True

    async def send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            await self._deliver(message)

    async def send_text(self, text: str) -> None:
        if not self.write_now(text):
            await self.send({"type": "websocket.send", "text": text})

    def write_now(self, text: str) -> bool:
        """Write a text frame without waiting, when nothing else is being sent and the
        connection takes it directly; False when it must go through the ASGI send. A socket
        that has gone takes (and drops) it."""
        if self.closed:
            return True
        if self._direct is None or self._lock.locked():
            return False
        try:
            return self._direct.write_text(text)
        except (OSError, RuntimeError):  # the transport went away under us
            self.closed = True
            return True

    async def close(self, code: int, reason: str, *, farewell: str | None = None) -> None:
        if self.closing:
            return
        self.closing = True
        try:
            async with asyncio.timeout(CLOSE_WAIT_S), self._lock:
                if farewell is not None:
                    await self._deliver({"type": "websocket.send", "text": farewell})
                await self._deliver({"type": "websocket.close", "code": code, "reason": reason})
        except TimeoutError:
            if self._direct is not None:
                self._direct.abort()
        self.closed = True

    async def _deliver(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            await self._send(message)
        except OSError:  # ASGI: a send on a closed connection raises an OSError subclass
            self.closed = True


class WirePeer:
    """A connected client of either of our fronts, as the dispatcher sees it: v2 and v4 frame
    an event (``42[name, data]``) and a server-side disconnect (``41``) alike."""

    __slots__ = ("principal", "socket")

    def __init__(self, principal: Principal, socket: WireSocket) -> None:
        self.principal = principal
        self.socket = socket

    async def emit(self, event: str, data: dict[str, Any]) -> None:
        await self.socket.send_text("42" + json_text([event, data]))

    async def emit_encoded(self, event: str, data: str) -> None:
        await self.socket.send_text(_event_text(event, data))

    def emit_now(self, event: str, data: str) -> bool:
        return self.socket.write_now(_event_text(event, data))

    async def close(self) -> None:
        await self.socket.close(1000, "", farewell="41")


def _event_text(event: str, data: str) -> str:
    head = _CHANGE if event == "change" else f"42[{json_text(event)},"
    return head + data + "]"


@dataclass(frozen=True)
class Packet:
    kind: str
    namespace: str
    ack_id: str | None
    data: str


def parse_packet(text: str) -> Packet:
    """Split a Socket.IO packet; raises BadRequest for what the protocol cannot contain."""
    kind, rest = text[:1], text[1:]
    if kind in ("5", "6"):
        raise BadRequest("Binary packets are not supported")
    if kind not in ("0", "1", "2", "3", "4"):
        raise BadRequest("Unknown Socket.IO packet type")
    namespace = DEFAULT_NAMESPACE
    if rest.startswith("/"):
        path, _, rest = rest.partition(",")
        namespace = path.partition("?")[0]
    digits = len(rest) - len(rest.lstrip(_DIGITS))
    if digits > _MAX_ACK_ID_DIGITS:
        raise BadRequest("Ack id too long")
    ack_id = rest[:digits] or None
    return Packet(kind, namespace, ack_id, rest[digits:])


def event_args(data: str) -> tuple[str, Any]:
    """The event name and its first argument from ``["name", arg, ...]``."""
    try:
        args = jsonio.loads(data)
    except jsonio.OutOfRange as exc:
        raise Invalid(exc.in_event_argument(), "integers must fit in 64 bits") from None
    except ValueError:
        raise BadRequest("Event data is not JSON") from None
    if not isinstance(args, list) or not args or not isinstance(args[0], str):
        raise BadRequest('An event must be ["name", data]')
    return args[0], args[1] if len(args) > 1 else None


def request_headers(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name; repeated ones joined as HTTP allows."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name in headers:
            value = headers[name] + ("; " if name == "cookie" else ", ") + value
        headers[name] = value
    return headers


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()
