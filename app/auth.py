"""Who is calling: the bearer token or ``sid`` cookie of an HTTP request, and the checks that
keep cookie-authenticated requests from being forged by other sites."""

from __future__ import annotations

from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

from app.acl import Principal
from app.credentials import Credentials
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


async def socket_principal(
    credentials: Credentials,
    allowed_origins: tuple[str, ...],
    headers: Mapping[str, str],
    query: Mapping[str, str],
    payload: Any,
) -> Principal:
    """The user opening a websocket: a Socket.IO v4 ``auth: {token}``, ``Authorization:
    Bearer``, ``?token=`` (v2 clients that cannot set headers), or the ``sid`` cookie (from a
    page of our own origin or an allowed one)."""
    token = payload.get("token") if isinstance(payload, dict) else None
    if token is None:
        token = bearer(headers.get("authorization"))
    if token is None:
        token = query.get("token")
    if isinstance(token, str) and token:
        return await credentials.from_token(token)
    cookies = SimpleCookie()
    try:
        cookies.load(headers.get("cookie", ""))
    except CookieError:
        raise Unauthorized() from None
    morsel = cookies.get(COOKIE)
    if morsel is None or not morsel.value:
        raise Unauthorized()
    origin = headers.get("origin")
    if (
        origin
        and _host_of(origin) != headers.get("host")
        and (origin.rstrip("/") not in allowed_origins)
    ):
        raise Unauthorized("Unauthorized")
    return await credentials.from_session(morsel.value)


def _host_of(origin: str) -> str | None:
    """The host (and port) an Origin header names; None when it is not a URL at all."""
    try:
        return urlsplit(origin).netloc
    except ValueError:  # "http://[" and the like
        return None
