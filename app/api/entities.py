"""``/api/v1/:store`` and ``/api/v1/:store/:id``: entity CRUD and lists."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from bson import ObjectId
from starlette.requests import Request
from starlette.responses import Response

from app import validation
from app.acl import Principal
from app.auth import admin, authenticate
from app.entities import revision
from app.errors import BadRequest, Invalid, NotFound
from app.feed import MAX_LIMIT as MAX_CHANGES
from app.filters import parse_where
from app.http import (
    SUCCESS,
    entity_response,
    json_array_response,
    json_response,
    precondition,
    read_json,
    services,
)
from app.middleware import request_id
from app.query import only_fields, parse_list_query
from app.users import principal_of


def _store(request: Request) -> str:
    return validation.store_name(request.path_params["store"])


def _path(request: Request) -> str:
    """The request's path, as ``request.url.path`` gives it for the store and entity paths
    (whose names and ids are checked before this is used, so nothing in them needs escaping),
    without parsing a whole URL from the scope for it."""
    path: str = request.scope["path"]
    return path


def _entity_path(request: Request) -> tuple[str, ObjectId]:
    return _store(request), validation.object_id(request.path_params["entity_id"])


async def _once(
    request: Request, user: Principal, body: Any, work: Callable[[], Awaitable[Response]]
) -> Response:
    """Run ``work``, once per ``Idempotency-Key`` when the request carries one."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return await work()
    scope = f"{request.method} {_path(request)}"
    idempotency = services(request).idempotency
    return await idempotency.run(user, key, scope, body, work, request_id(request))


async def create(request: Request) -> Response:
    user = await authenticate(request)
    store = _store(request)
    body = validation.json_object(await read_json(request))
    found = services(request)

    async def work() -> Response:
        entity = await found.entities.create(store, body, user)
        location = f"{_path(request).rstrip('/')}/{entity['_id']}"
        return entity_response(entity, 201, {"Location": location})

    return await _once(request, user, body, work)


async def get(request: Request) -> Response:
    user = await authenticate(request)
    store, entity_id = _entity_path(request)
    only = request.query_params.get("only")
    fields = only_fields(only) if only is not None else None
    unless = precondition(request, "if-none-match")
    entity = await services(request).entities.get(store, entity_id, user, fields)
    tag = f'"{revision(entity)}"'
    if unless is not None and (unless == "*" or f'"{unless}"' == tag):
        return Response(status_code=304, headers={"ETag": tag})
    return entity_response(entity)


async def list_entities(request: Request) -> Response:
    user = await authenticate(request)
    store = _store(request)
    params = {name: request.query_params.getlist(name) for name in request.query_params}
    found = services(request)
    cursors = found.cursors
    query = parse_list_query(params, lambda token, sort: cursors.read(token, store, sort))
    if query.meta:
        return json_response(await found.entities.meta(store, query, user))
    page = await found.entities.list(store, query, user)
    headers = {}
    if page.last is not None:
        # An id that is not an ObjectId was written by another program: the database
        # compares ids of one type only, so it cannot key the next page. Continue by offset.
        keyed = isinstance(page.last.id, ObjectId)
        if query.sort is None and keyed:
            following = query.next_params(last_id=page.last.id)
        else:
            token = (
                cursors.make(store, query.sort, list(page.last.values), page.last.id)
                if query.sort is not None and keyed
                else None
            )
            following = query.next_params(cursor=token or request.query_params.get("cursor"))
            if token is None:  # sort values too long to carry, or no id to key: by offset
                following["offset"] = str(query.offset + query.limit)
        headers["Link"] = f'<{_path(request)}?{urlencode(following)}>; rel="next"'
    return json_array_response(page.slices, headers)


async def patch(request: Request) -> Response:
    user = await authenticate(request)
    store, entity_id = _entity_path(request)
    body = validation.json_object(await read_json(request))
    expected = precondition(request)
    entity = await services(request).entities.patch(store, entity_id, body, user, expected)
    return entity_response(entity)


async def set_access(request: Request) -> Response:
    user = await authenticate(request)
    store, entity_id = _entity_path(request)
    body = validation.json_object(await read_json(request))
    expected = precondition(request)
    updated = await services(request).entities.set_access(store, entity_id, body, user, expected)
    await services(request).audit.record(
        "access-changed", user.user_id, store=store, entity=str(entity_id), changes=body
    )
    return entity_response(updated)


async def changes(request: Request) -> Response:
    """``GET /:store/_changes?since=&limit=``: what changed, in commit order, once each."""
    user = await authenticate(request)
    store = _store(request)
    params = request.query_params
    for name in ("since", "limit", "where", "only"):
        if len(params.getlist(name)) > 1:
            raise BadRequest(f"{name} was given more than once")
    raw_limit = params.get("limit", str(MAX_CHANGES))
    if not validation.digits(raw_limit) or not 1 <= int(raw_limit) <= MAX_CHANGES:
        raise Invalid("limit", f"must be a whole number from 1 to {MAX_CHANGES}")
    where = parse_where(params["where"]) if "where" in params else None
    only = only_fields(params["only"]) if "only" in params else None
    feed = services(request).feed
    answer = await feed.read(store, user, params.get("since"), int(raw_limit), where, only)
    return json_response(answer)


async def bulk(request: Request) -> Response:
    """``POST /:store/_bulk``: many operations, each answered as its own endpoint would."""
    user = await authenticate(request)
    store = _store(request)
    found = services(request)
    body = validation.json_object(await read_json(request, found.settings.max_bulk_bytes))

    async def work() -> Response:
        return json_response(await found.bulk.run(store, body, user))

    return await _once(request, user, body, work)


async def explain(request: Request) -> Response:
    """``GET /:store/:id/_explain?user=<id>`` (admins): may that user read and change it?"""
    caller = await admin(request)
    store, entity_id = _entity_path(request)
    wanted = request.query_params.get("user")
    if not wanted:
        raise Invalid("user", "is required: the id of the user to explain access for")
    found = services(request)
    target = principal_of(await found.users.get(wanted))
    return json_response(await found.entities.explain(store, entity_id, caller, target))


async def delete(request: Request) -> Response:
    user = await authenticate(request)
    store, entity_id = _entity_path(request)
    found = services(request)
    last = await found.entities.delete(store, entity_id, user, precondition(request))
    await found.history.deleted(store, entity_id, last, user.user_id)
    await found.audit.record("entity-deleted", user.user_id, store=store, entity=str(entity_id))
    return json_response(SUCCESS)


async def history(request: Request) -> Response:
    """``GET /:store/:id/_history``: the entity's versions, newest first. Readable by whoever
    may read the entity now; once it is deleted, by admins."""
    user = await authenticate(request)
    store, entity_id = _entity_path(request)
    found = services(request)
    try:
        await found.entities.get(store, entity_id, user)
    except NotFound:
        if not user.admin:
            raise
    return json_response(await found.history.entries(store, entity_id))
