"""``/api/v1/_stores``: store definitions (read by every signed-in user, changed by admins)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app import validation
from app.auth import admin, authenticate
from app.http import SUCCESS, json_response, read_json, services
from app.query import flag


def _store(request: Request) -> str:
    return validation.store_name(request.path_params["store"])


async def list_stores(request: Request) -> Response:
    user = await authenticate(request)
    return json_response(await services(request).definitions.catalogue(user.admin))


async def get(request: Request) -> Response:
    await authenticate(request)
    return json_response(await services(request).definitions.describe(_store(request)))


async def put(request: Request) -> Response:
    caller = await admin(request)
    store = _store(request)
    dry_run = flag(request.query_params.get("dryRun"), "dryRun")
    body = validation.json_object(await read_json(request))
    definitions = services(request).definitions
    if dry_run:
        return json_response(await definitions.dry_run(store, body))
    stored = await definitions.put(store, body)
    await services(request).audit.record(
        "definition-changed", caller.user_id, store=store, version=stored["version"]
    )
    return json_response(stored)


async def delete(request: Request) -> Response:
    caller = await admin(request)
    store = _store(request)
    drop = flag(request.query_params.get("drop"), "drop")
    await services(request).definitions.remove(store, drop)
    await services(request).audit.record(
        "definition-deleted", caller.user_id, store=store, dropped=drop
    )
    return json_response(SUCCESS)
