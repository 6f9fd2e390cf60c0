"""The administration console at ``/admin``: one page and its static assets, served with a
strict Content-Security-Policy (no inline script, nothing from other origins) and no framing.
The console is a client of the public REST API and Socket.IO endpoint like any other."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

ROOT = Path(__file__).resolve().parent.parent / "console"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


async def page(request: Request) -> Response:
    """Every console URL (``/admin``, ``/admin/stores/<store>/<id>``, ...) is the one page;
    the page routes by its own URL, so entity pages are stable and bookmarkable."""
    return FileResponse(ROOT / "index.html", headers=SECURITY_HEADERS, media_type="text/html")


class Assets:
    """The console's CSS and JavaScript modules, with the same security headers."""

    def __init__(self) -> None:
        self.files = StaticFiles(directory=ROOT)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.files(scope, receive, with_headers)
