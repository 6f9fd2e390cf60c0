"""Who is calling: the bearer token or ``sid`` cookie of an HTTP request, and the checks that
keep cookie-authenticated requests from being forged by other sites."""

from __future__ import annotations

from starlette.requests import Request

from app.acl import Principal
from app.errors import Forbidden, Unauthorized, UnsupportedMediaType
from app.http import is_json, services

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
COOKIE = "sid"


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header; raises 401 for any other scheme."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthorized()
    return token


async def authenticate(request: Request) -> Principal:
    """The caller, from ``Authorization: Bearer`` or the ``sid`` cookie; raises 401."""
    credentials = services(request).credentials
    token = bearer(request.headers.get("authorization"))
    if token is not None:
        return await credentials.from_token(token)
    sid = request.cookies.get(COOKIE)
    if not sid:
        raise Unauthorized()
    user = await credentials.from_session(sid)
    if request.method not in SAFE_METHODS:
        _check_cookie_request(request)
    return user


def _check_cookie_request(request: Request) -> None:
    if not is_json(request.headers.get("content-type")):
        raise UnsupportedMediaType(
            "Requests that change state with a session cookie must be application/json"
        )
    origin = request.headers.get("origin")
    if origin is None:
        return
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    allowed = services(request).settings.cors_origins
    if origin.rstrip("/") != own and origin.rstrip("/") not in allowed:
        raise Forbidden("Cross-origin request refused")


async def admin(request: Request) -> Principal:
    user = await authenticate(request)
    if not user.admin:
        raise Forbidden()
    return user
