"""``/api/v1/_tokens``: the caller's personal API tokens."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app import validation
from app.auth import authenticate
from app.http import SUCCESS, json_response, read_json, services


async def create(request: Request) -> Response:
    user = await authenticate(request)
    body = validation.json_object(await read_json(request))
    created = await services(request).credentials.create_personal_token(user, body)
    await services(request).audit.record("token-created", user.user_id, token=created["id"])
    return json_response(created, 201, {"Location": f"{request.url.path}/{created['id']}"})


async def list_tokens(request: Request) -> Response:
    user = await authenticate(request)
    return json_response(await services(request).credentials.personal_tokens(user))


async def revoke(request: Request) -> Response:
    user = await authenticate(request)
    token_id = request.path_params["token_id"]
    await services(request).credentials.revoke_personal_token(user, token_id)
    await services(request).audit.record("token-revoked", user.user_id, token=token_id)
    return json_response(SUCCESS)
