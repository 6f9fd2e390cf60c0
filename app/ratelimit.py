"""``RATE_LIMIT``: at most that many API requests per minute per credential (the bearer token
or session cookie; the client address for requests without one). Counted per server process
in fixed one-minute windows; 0 turns it off. While a limit is set every API response says
where the caller stands (``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset``),
and a request past it is answered 429 with ``Retry-After``, before it takes any other work.
"""

from __future__ import annotations

import hashlib
import time
from http.cookies import SimpleCookie

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import COOKIE
from app.errors import TooManyRequests
from app.middleware import render, scope_request_id

WINDOW_S = 60
MAX_KEYS = 100_000


def credential_key(scope: Scope) -> str:
    headers = dict(scope.get("headers") or [])
    authorization = headers.get(b"authorization", b"")
    if authorization:
        return "t:" + hashlib.sha256(authorization).hexdigest()
    cookie = headers.get(b"cookie", b"").decode("latin-1")
    if cookie:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie)
        except Exception:  # a malformed cookie header counts as no cookie
            jar = SimpleCookie()
        if COOKIE in jar:
            return "s:" + hashlib.sha256(jar[COOKIE].value.encode()).hexdigest()
    client = scope.get("client")
    return "a:" + (client[0] if client else "unknown")


class RateLimit:
    def __init__(self, app: ASGIApp, per_minute: int):
        self.app = app
        self.limit = per_minute
        self.counts: dict[str, tuple[int, int]] = {}
        self.window = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.limit <= 0 or scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        now = time.time()
        window = int(now // WINDOW_S)
        if window != self.window or len(self.counts) > MAX_KEYS:
            self.counts.clear()  # a new window: every count starts again
            self.window = window
        key = credential_key(scope)
        _, used = self.counts.get(key, (window, 0))
        used += 1
        self.counts[key] = (window, used)
        reset = max(1, int((window + 1) * WINDOW_S - now + 0.999))
        limits = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(0, self.limit - used)),
            "RateLimit-Reset": str(reset),
        }
        if used > self.limit:
            error = TooManyRequests(
                f"More than {self.limit} requests a minute with this credential; "
                f"retry in {reset} s",
                retry_after=reset,
            )
            error.headers.update(limits)
            await render(error, scope_request_id(scope))(scope, receive, send)
            return

        async def with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in limits.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_limits)
