"""``/api/v1/auth``: sign in with a cookie session or for a token, and sign out."""

from __future__ import annotations

from email.utils import format_datetime

from starlette.requests import Request
from starlette.responses import Response

from app import validation
from app.auth import COOKIE, authenticate
from app.credentials import token_body
from app.errors import BadRequest, Unauthorized
from app.http import SUCCESS, json_response, read_json, services
from app.passwords import verify_password
from app.storage import Document


async def _check_password(request: Request) -> Document:
    body = validation.json_object(await read_json(request))
    login, password = body.get("login"), body.get("password")
    if not isinstance(login, str) or not isinstance(password, str) or not login:
        raise BadRequest("The body needs a login and a password, both strings")
    found = services(request)
    address = request.client.host if request.client else "unknown"
    await found.throttle.check(login, address)
    user = await found.users.by_login(login)
    stored = user.get("passwordHash") if user and not user.get("disabled") else None
    if not await verify_password(stored, password) or user is None:
        await found.throttle.failed(login, address)
        await found.audit.record("signin-failed", None, login=login[:200], address=address)
        raise Unauthorized()
    await found.throttle.succeeded(login)
    return user


async def sign_in(request: Request) -> Response:
    user = await _check_password(request)
    sid, expires = await services(request).credentials.open_session(str(user["_id"]))
    await services(request).audit.record("signin", str(user["_id"]), kind="session")
    cookie = f"{COOKIE}={sid}; Path=/; Expires={format_datetime(expires, usegmt=True)}; HttpOnly"
    cookie += "; SameSite=Lax" + ("; Secure" if request.url.scheme == "https" else "")
    return json_response(SUCCESS, headers={"Set-Cookie": cookie})


async def token(request: Request) -> Response:
    user = await _check_password(request)
    issued = await services(request).credentials.issue_token(str(user["_id"]))
    await services(request).audit.record("signin", str(user["_id"]), kind="token")
    return json_response(token_body(issued))


async def sign_out(request: Request) -> Response:
    user = await authenticate(request)
    await services(request).credentials.end(user.credential)
    expired = f"{COOKIE}=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax"
    return json_response(SUCCESS, headers={"Set-Cookie": expired})
