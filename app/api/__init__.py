"""HTTP handlers, one module per resource; ``routes`` lists them all.

Each path is one route with a handler per method, so a wrong method gets 405 with the full
``Allow`` list. Store routes never claim the paths of system resources (``auth``, ``_me``,
``_users``, ``_tokens``, ``_stores``, the OpenAPI document), so those answer 404/405 rather
than being read as store names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import Receive, Scope, Send

from app.api import audit, console, docs, entities, session, stores, system, tokens, users
from app.errors import APIError, MethodNotAllowed, NotFound
from app.middleware import render, scope_request_id
from app.validation import SYSTEM_NAMES

V1 = "/api/v1"
Handler = Callable[[Request], Awaitable[Response]]


class Resource(Route):
    """One path with a handler per method. A request goes straight to its handler, without
    Starlette's per-request wrappers; an API error the handler raises is rendered here, inside
    every middleware, so rate-limit and request-id headers reach error responses too."""

    def __init__(self, path: str, handlers: dict[str, Handler]):
        super().__init__(path, _unreachable, methods=list(handlers), name=path)
        self.handlers = handlers
        self.allow = ", ".join(sorted(self.methods or ()))

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get(scope["method"])
        response: Response
        if handler is None:
            error: APIError = MethodNotAllowed(headers={"Allow": self.allow})
            response = render(error, scope_request_id(scope))
        else:
            try:
                response = await handler(Request(scope, receive, send))
            except APIError as raised:
                response = render(raised, scope_request_id(scope))
        await response(scope, receive, send)


class StoreRoute(Resource):
    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match != Match.NONE and child["path_params"]["store"] in SYSTEM_NAMES:
            return Match.NONE, {}
        return match, child


def resource(path: str, route_class: type[Resource] = Resource, **handlers: Handler) -> Route:
    if "GET" in handlers:
        # Starlette allows HEAD wherever GET is allowed; answer it as GET (the server drops
        # the body) rather than fail looking for a HEAD handler.
        handlers.setdefault("HEAD", handlers["GET"])
    return route_class(path, handlers)


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """What the router answers for a path no route matches."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1000})
        return
    await render(NotFound(), scope_request_id(scope))(scope, receive, send)


STORE_PATH = f"{V1}/{{store}}"
ENTITY_PATH = f"{V1}/{{store}}/{{entity_id}}"
_PREFIX = V1 + "/"


class EntityShortcut:
    """In front of the router: ``/api/v1/{store}`` and ``/api/v1/{store}/{id}``, the paths of
    most requests, go straight to their routes instead of being matched against the routes
    one by one (18 µs of a GET's CPU, measured in-process). Only paths the router would send
    there are taken: one or two segments after ``/api/v1/``, the first not a system name, a
    second not starting with ``_`` (``_bulk`` and ``_changes``, the store routes of the same
    shape). Everything else goes to the router, and so does every path of a shape another
    route could claim (see ``shortcut_route``)."""

    def __init__(self, router: Router):
        self.router = router
        self.store_route = shortcut_route(router.routes, STORE_PATH)
        self.entity_route = shortcut_route(router.routes, ENTITY_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(_PREFIX):
                store, slash, entity = path[len(_PREFIX) :].partition("/")
                if not slash:
                    route, params = self.store_route, {"store": store}
                    taken = _store_shaped(store)
                else:
                    route, params = self.entity_route, {"store": store, "entity_id": entity}
                    taken = _entity_shaped(store, entity)
                if taken and route is not None:
                    scope["router"] = self.router
                    scope["route"] = route
                    scope["endpoint"] = route.endpoint
                    scope["path_params"] = params
                    await route.handle(scope, receive, send)
                    return
        await self.router(scope, receive, send)


def shortcut_route(routes: list[BaseRoute], template: str) -> Resource | None:
    """The route of ``template`` (the store or the entity path), if the shortcut may stand in
    for the router on paths of its shape; None if any other route could match one of them."""
    found: Resource | None = None
    for route in routes:
        path = getattr(route, "path", "")
        if path == template and isinstance(route, Resource):
            found = route
        elif path.startswith(V1) and _overlaps(path, isinstance(route, Mount), template):
            return None
    return found


def _store_shaped(store: str) -> bool:
    """Whether ``/api/v1/{store}`` is a path the store route takes."""
    return bool(store) and store not in SYSTEM_NAMES


def _entity_shaped(store: str, entity: str) -> bool:
    """Whether ``/api/v1/{store}/{entity}`` is a path the entity route takes."""
    return (
        bool(store)
        and bool(entity)
        and entity[0] != "_"
        and "/" not in entity
        and store not in SYSTEM_NAMES
    )


def _overlaps(template: str, prefix: bool, shape: str) -> bool:
    """Whether a route of ``template`` could claim a path the shortcut takes for ``shape``."""
    if prefix or ":path}" in template:
        return True  # claims whole subtrees
    store, slash, entity = template[len(_PREFIX) :].partition("/")
    if shape == STORE_PATH:
        return not slash and _store_shaped(store)
    return bool(slash) and _entity_shaped(store, entity)


async def _unreachable(request: Request) -> Response:  # pragma: no cover - handle() calls
    raise NotFound()


# Store routes first, in the order below (a route of a system resource never matches there,
# see StoreRoute): the router tries routes one by one, and entity requests are most of the
# traffic. Within them ``_bulk`` and ``_changes`` come before the entity id they would match.
routes: list[BaseRoute] = [
    resource(f"{V1}/{{store}}/_bulk", StoreRoute, POST=entities.bulk),
    resource(f"{V1}/{{store}}/_changes", StoreRoute, GET=entities.changes),
    resource(
        f"{V1}/{{store}}/{{entity_id}}",
        StoreRoute,
        GET=entities.get,
        PATCH=entities.patch,
        DELETE=entities.delete,
    ),
    resource(f"{V1}/{{store}}", StoreRoute, GET=entities.list_entities, POST=entities.create),
    resource(f"{V1}/{{store}}/{{entity_id}}/access", StoreRoute, PUT=entities.set_access),
    resource(f"{V1}/{{store}}/{{entity_id}}/_explain", StoreRoute, GET=entities.explain),
    resource(f"{V1}/{{store}}/{{entity_id}}/_history", StoreRoute, GET=entities.history),
    resource("/healthz", GET=system.healthz),
    resource(f"{V1}/openapi.json", GET=docs.openapi),
    resource("/api/docs", GET=docs.page),
    Mount("/api/docs/assets", app=docs.ASSETS, name="docs-assets"),
    Mount("/admin/assets", app=console.Assets(), name="console-assets"),
    resource("/admin", GET=console.page),
    resource("/admin/{rest:path}", GET=console.page),
    resource(f"{V1}/auth", POST=session.sign_in, DELETE=session.sign_out),
    resource(f"{V1}/auth/token", POST=session.token),
    resource(f"{V1}/_me", GET=system.me),
    resource(f"{V1}/_users", GET=users.list_users, POST=users.create),
    resource(f"{V1}/_users/{{user_id}}", GET=users.get, PATCH=users.patch, DELETE=users.delete),
    resource(f"{V1}/_tokens", GET=tokens.list_tokens, POST=tokens.create),
    resource(f"{V1}/_tokens/{{token_id}}", DELETE=tokens.revoke),
    resource(f"{V1}/_audit", GET=audit.list_entries),
    resource(f"{V1}/_stores", GET=stores.list_stores),
    resource(f"{V1}/_stores/{{store}}", GET=stores.get, PUT=stores.put, DELETE=stores.delete),
]
