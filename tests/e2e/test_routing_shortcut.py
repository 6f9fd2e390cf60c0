"""The store and entity paths' shortcut past the router (``app.api.EntityShortcut``): it takes
exactly the requests the router would give the store and the entity route, answers them as
the router's route would, and stands aside when the route table could claim such a path
otherwise."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.responses import Response
from starlette.routing import Mount, Route

from app.api import ENTITY_PATH, STORE_PATH, resource, routes, shortcut_route


async def _nothing(request: Any) -> Response:
    return Response()


def test_the_shortcut_stands_aside_for_routes_that_could_claim_its_paths() -> None:
    found = shortcut_route(routes, ENTITY_PATH)
    assert found is not None and found.path == ENTITY_PATH
    for extra in (
        resource("/api/v1/{store}/export", GET=_nothing),
        Route("/api/v1/reports/{report}", _nothing),
        Route("/api/v1/{rest:path}", _nothing),
        Mount("/api/v1/files", app=_nothing),
    ):
        assert shortcut_route([*routes, extra], ENTITY_PATH) is None, extra
    # Routes of that shape the shortcut never takes leave it in place.
    assert (
        shortcut_route([*routes, resource("/api/v1/{store}/_export", GET=_nothing)], ENTITY_PATH)
        is found
    )
    assert (
        shortcut_route([*routes, Route("/api/v1/_users/{user}/roles", _nothing)], ENTITY_PATH)
        is found
    )


def test_the_store_shortcut_stands_aside_for_routes_that_could_claim_its_paths() -> None:
    found = shortcut_route(routes, STORE_PATH)
    assert found is not None and found.path == STORE_PATH
    for extra in (
        Route("/api/v1/reports", _nothing),
        resource("/api/v1/{anything}", GET=_nothing),
        Route("/api/v1/{rest:path}", _nothing),
        Mount("/api/v1/files", app=_nothing),
    ):
        assert shortcut_route([*routes, extra], STORE_PATH) is None, extra
    # A system name, or a path of two segments, is never taken for a store.
    assert shortcut_route([*routes, Route("/api/v1/_me", _nothing)], STORE_PATH) is found
    assert shortcut_route([*routes, Route("/api/v1/reports/x", _nothing)], STORE_PATH) is found


@pytest.mark.asyncio
async def test_entity_requests_skip_the_router_and_others_do_not(app, admin, store):
    routed: list[str] = []
    router = app.router
    original = router.middleware_stack

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        routed.append(f"{scope['method']} {scope['path']}")
        await original(scope, receive, send)

    router.middleware_stack = recording
    try:
        created = await admin.client.post(f"/api/v1/{store}", json={"n": 1})
        assert created.status_code == 201 and created.headers["X-Request-Id"]
        made = created.json()
        entity = f"/api/v1/{store}/{made['_id']}"
        assert created.headers["Location"] == entity
        listed = await admin.client.get(f"/api/v1/{store}?limit=5")
        assert listed.status_code == 200 and [e["_id"] for e in listed.json()] == [made["_id"]]
        wrong_method = await admin.client.delete(f"/api/v1/{store}")
        assert (
            wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "GET, HEAD, POST"
        )
        bad_store = await admin.client.get("/api/v1/no$such")
        assert bad_store.status_code == 400
        got = await admin.client.get(entity)
        assert got.status_code == 200 and got.json()["n"] == 1
        assert "ETag" in got.headers and got.headers["X-Request-Id"]
        patched = await admin.client.patch(entity, json={"n": 2})
        assert patched.status_code == 200 and patched.json()["n"] == 2
        wrong = await admin.client.post(entity, json={})
        assert wrong.status_code == 405
        assert wrong.headers["Allow"] == "DELETE, GET, HEAD, PATCH"
        missing = await admin.client.get(f"/api/v1/{store}/65f0aaaaaaaaaaaaaaaaaaaa")
        assert missing.status_code == 404 and missing.json()["error"] == "NOT_FOUND"
        bad = await admin.client.get(f"/api/v1/{store}/not-an-id")
        assert bad.status_code == 400
        assert routed == []  # all of those went past the router
        changes = await admin.client.get(f"/api/v1/{store}/_changes")
        assert changes.status_code == 200
        me = await admin.client.get(f"/api/v1/_users/{admin.id}")
        assert me.status_code == 200 and me.json()["login"] == "admin"
        token = await admin.client.get("/api/v1/auth/token")
        assert token.status_code == 405
        users = await admin.client.get("/api/v1/_users")
        assert users.status_code == 200
        slash = await admin.client.get(f"/api/v1/{store}/")
        assert slash.status_code in (307, 404)  # the router's answer, whatever it is
        nested = await admin.client.get(f"{entity}/_history")
        assert nested.status_code == 200
        assert routed == [
            f"GET /api/v1/{store}/_changes",
            f"GET /api/v1/_users/{admin.id}",
            "GET /api/v1/auth/token",
            "GET /api/v1/_users",
            f"GET /api/v1/{store}/",
            f"GET {entity}/_history",
        ]
    finally:
        router.middleware_stack = original
