"""The contract between the protocol fronts (EIO=4 via python-socketio, EIO=3 hand-written)
and the one place that holds subscription logic.

A front authenticates the connection, wraps it in a ``Peer`` and hands every client event to
the ``Dispatcher``; the dispatcher answers with the ack payload and pushes ``change`` events
back through ``Peer.emit``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from app.acl import Principal


class Peer(Protocol):
    """One connected socket, whatever its protocol."""

    principal: Principal

    async def emit(self, event: str, data: dict[str, Any]) -> None:
        """Send an event to the client; never raises for a connection that has gone."""

    async def emit_encoded(self, event: str, data: str) -> None:
        """Send an event whose data is already JSON text (the hub encodes each change once,
        not once per subscriber); never raises for a connection that has gone."""

    def emit_now(self, event: str, data: str) -> bool:
        """``emit_encoded`` done at once, if the connection can take the frame without any
        wait (``frames.DirectFrames``); False when nothing was sent and ``emit_encoded`` must
        be used."""

    async def close(self) -> None:
        """Disconnect the client (used when its session ends or its token is revoked)."""


class Dispatcher(Protocol):
    def attach(self, peer: Peer) -> None: ...

    async def handle(self, peer: Peer, event: str, data: Any) -> dict[str, Any]:
        """Run a client event (``subscribe``, ``unsubscribe``); return the ack payload."""
        ...

    async def detach(self, peer: Peer) -> None: ...


# (headers with lower-case names, query parameters, Socket.IO v4 ``auth`` payload or None)
# -> the principal; raises app.errors.Unauthorized.
SocketAuthenticator = Callable[[Mapping[str, str], Mapping[str, str], Any], Awaitable[Principal]]
