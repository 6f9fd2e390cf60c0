"""Text frames written straight to a websocket's transport, for the fan-out.

Through ASGI, each event to each socket costs a message dict, the server's ``send``
coroutine, and websockets building a frame object and then its bytes. A fan-out to 10,000
sockets pays that 10,000 times per change. Yet an unfragmented, uncompressed text frame from
a server is only a 2-, 4- or 10-byte header and the UTF-8 payload (RFC 6455, 5.2; a server
never masks).

So when the server is uvicorn with its websockets-sansio protocol (what ``python -m app``
runs) and the connection negotiated no extension, ``DirectFrames`` writes that frame to the
transport itself. It declines, and the caller takes the ASGI path, whenever that path would
do anything but write: the connection closing or closed, the transport's buffer over its
high-water mark (the ASGI send would wait for it to drain), an extension such as
permessage-deflate in use, or any other ASGI server.
"""

from __future__ import annotations

import struct
from typing import Any

from starlette.types import Send
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import OPEN

_FIN_TEXT = 0x81
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")
# What the protocol object must have for a write to be checked and made (uvicorn >= 0.35).
_NEEDED = (
    "transport",
    "conn",
    "writable",
    "close_sent",
    "disconnected",
    "handshake_complete",
    "initial_response",
)


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload`` (already UTF-8)."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 1 << 16:
        return _HEADER_16.pack(_FIN_TEXT, 126, size) + payload
    return _HEADER_64.pack(_FIN_TEXT, 127, size) + payload


class DirectFrames:
    """Writes text frames to one uvicorn websocket connection without going through ASGI."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    @classmethod
    def of(cls, send: Send) -> DirectFrames | None:
        """For the ASGI ``send`` of a uvicorn websocket connection; None for anything else."""
        protocol = getattr(send, "__self__", None)
        if not isinstance(protocol, WebSocketsSansIOProtocol):
            return None
        if not all(hasattr(protocol, name) for name in _NEEDED):  # pragma: no cover
            return None
        return cls(protocol)

    def abort(self) -> None:
        """Cut the connection now, whatever its buffer holds: uvicorn then reports it lost,
        which ends a send waiting for room (it raises) and the front's receive loop."""
        self._protocol.transport.abort()

    def write_text(self, text: str) -> bool:
        """Write ``text`` as one frame now; False (nothing written) when the ASGI path must."""
        protocol = self._protocol
        conn = protocol.conn
        if (
            protocol.close_sent
            or protocol.disconnected
            or not protocol.handshake_complete
            or protocol.initial_response is not None
            or not protocol.writable.is_set()
            or conn.state is not OPEN
            or conn.extensions
            or conn.expect_continuation_frame
        ):
            return False
        transport = protocol.transport
        if transport.is_closing():
            return False
        transport.write(text_frame(text.encode()))
        return True
