"""``/api/v1/_audit``: the audit log, for admins, newest first, paged by ``before``."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from app import validation
from app.audit import MAX_LIMIT
from app.auth import admin
from app.clock import parse_time
from app.errors import BadRequest, Invalid
from app.http import json_response, services


async def list_entries(request: Request) -> Response:
    await admin(request)
    params = request.query_params
    for name in ("user", "store", "from", "to", "before", "limit"):
        if len(params.getlist(name)) > 1:
            raise BadRequest(f"{name} was given more than once")
    raw_limit = params.get("limit", "100")
    if not validation.digits(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise Invalid("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    limit = int(raw_limit)
    before = validation.object_id(params["before"], "before") if "before" in params else None
    since = parse_time(params["from"], "from") if "from" in params else None
    until = parse_time(params["to"], "to") if "to" in params else None
    store = validation.store_name(params["store"]) if "store" in params else None
    entries = await services(request).audit.entries(
        limit, before, params.get("user"), store, since, until
    )
    headers = {}
    if len(entries) == limit:
        following = {k: v for k, v in params.items() if k != "before"}
        following["before"] = entries[-1]["id"]
        headers["Link"] = f'<{request.url.path}?{urlencode(following)}>; rel="next"'
    return json_response(entries, headers=headers)
