"""``/api/v1/_users``: user administration, for admins only."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app import validation
from app.auth import admin
from app.http import SUCCESS, json_response, read_json, services
from app.users import render


async def create(request: Request) -> Response:
    caller = await admin(request)
    body = validation.json_object(await read_json(request))
    user = await services(request).users.create(body)
    await services(request).audit.record(
        "user-created", caller.user_id, target=str(user["_id"]), login=user["login"]
    )
    return json_response(render(user), 201, {"Location": f"{request.url.path}/{user['_id']}"})


async def list_users(request: Request) -> Response:
    await admin(request)
    return json_response([render(user) for user in await services(request).users.list()])


async def get(request: Request) -> Response:
    await admin(request)
    return json_response(render(await services(request).users.get(request.path_params["user_id"])))


async def patch(request: Request) -> Response:
    caller = await admin(request)
    body = validation.json_object(await read_json(request))
    user = await services(request).users.patch(request.path_params["user_id"], body)
    # The field names only: a new password never reaches the log.
    await services(request).audit.record(
        "user-changed", caller.user_id, target=str(user["_id"]), fields=sorted(body)
    )
    return json_response(render(user))


async def delete(request: Request) -> Response:
    caller = await admin(request)
    await services(request).users.delete(request.path_params["user_id"])
    await services(request).audit.record(
        "user-deleted", caller.user_id, target=request.path_params["user_id"]
    )
    return json_response(SUCCESS)
