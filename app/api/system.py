"""Service endpoints: health and the caller's own account."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.auth import authenticate
from app.http import json_response, services


async def healthz(request: Request) -> Response:
    await services(request).storage.ping()  # raises Unavailable (503)
    return json_response({"status": "ok"})


async def me(request: Request) -> Response:
    user = await authenticate(request)
    return json_response(
        {
            "id": user.user_id,
            "login": user.login,
            "name": user.name,
            "groups": list(user.groups),
            "branches": list(user.branches),
            "admin": user.admin,
        }
    )
