"""The one error renderer, and the middleware that gives every response an ``X-Request-Id``
and turns anything unexpected into a 500 envelope (logged with the request id, no trace in
the body)."""

from __future__ import annotations

import logging
import re

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import jsonio
from app.errors import (
    APIError,
    BadRequest,
    Internal,
    MethodNotAllowed,
    NotFound,
    TooLarge,
    UnsupportedMediaType,
)
from app.nonces import Nonces

log = logging.getLogger(__name__)

_SANE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: TooLarge,
    415: UnsupportedMediaType,
}


# Request ids: unique, cheap; an id is not a secret.
_ids = Nonces(8, 16)


def request_id(request: Request) -> str:
    return scope_request_id(request.scope)


def scope_request_id(scope: Scope) -> str:
    """The id ``RequestContext`` gave the request (empty outside it)."""
    return str(scope.get("state", {}).get("request_id", ""))


def render(error: APIError, rid: str) -> Response:
    headers = {**error.headers, "X-Request-Id": rid}
    return Response(
        jsonio.dumps(error.body(rid)), error.status, headers, media_type="application/json"
    )


def as_api_error(exc: HTTPException) -> APIError:
    """Starlette's own errors (an unknown path's 404, a wrong method's 405) as ours."""
    kind = _BY_STATUS.get(exc.status_code, BadRequest if exc.status_code < 500 else Internal)
    headers = dict(exc.headers or {})
    if "Allow" in headers:  # Starlette lists a route's methods in set order; make it stable
        headers["Allow"] = ", ".join(sorted(m.strip() for m in headers["Allow"].split(",")))
    error = kind.__new__(kind)
    APIError.__init__(error, None, headers=headers)
    return error


class RequestContext:
    """Outermost app middleware: request ids, and the last line of defence against a 500
    with a stack trace."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        rid = given if given and _SANE_ID.fullmatch(given) else _ids.next()
        path = scope["path"]
        scope.setdefault("state", {})["request_id"] = rid
        header = (b"x-request-id", rid.encode("latin-1"))
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append(header)  # an error envelope names it already
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except (APIError, HTTPException) as exc:
            # Raised outside a route's handler (a static file not found, say; the routes
            # render their own), or while a streamed body was being sent.
            if started:
                log.exception("%s %s failed midway (request id %s)", scope["method"], path, rid)
                raise
            error = exc if isinstance(exc, APIError) else as_api_error(exc)
            await render(error, rid)(scope, receive, send)
        except ClientDisconnect:
            # The client went away before its body was read: nobody is left to answer, and
            # a closed connection is no fault of ours to log with a trace (a client could
            # fill the log with them).
            log.info(
                "%s %s: the client left mid-request (request id %s)", scope["method"], path, rid
            )
        except Exception:
            log.exception("%s %s failed (request id %s)", scope["method"], path, rid)
            if started:
                raise
            await render(Internal(), rid)(scope, receive, send)
