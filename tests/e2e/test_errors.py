"""The error envelope over HTTP: unknown paths, wrong methods, oversized bodies, request ids,
health, and a database that goes away and comes back."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.embedded import EmbeddedDatabase
from tests.e2e.conftest import ADMIN_PASSWORD, client_for, make_settings
from tests.e2e.support import answers, fresh_address, running, seconds_until, token_client
from tests.e2e.support import token_for as sign_in_for_token
from tests.helpers import assert_api_error

pytestmark = pytest.mark.asyncio

SOME_ID = "65f0aaaaaaaaaaaaaaaaaaaa"


# --- routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/nope",
        "/api",
        "/api/v1",
        "/api/v2/things",
        "/api/v1/auth/other",
        "/api/v1/_me/more",
        f"/api/v1/_users/{SOME_ID}/more",
        f"/api/v1/_tokens/{SOME_ID}/more",
        f"/api/v1/things/{SOME_ID}/access/more",
        f"/api/v1/things/{SOME_ID}/other",
    ],
)
async def test_unknown_paths_are_404(client, admin, path):
    for caller in (client, admin.client):  # the same with or without credentials
        body = assert_api_error(await caller.get(path), 404, "NOT_FOUND")
        assert body["message"] == "Not Found" and body["tags"] == ["error_not_found"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/api/v1/auth", "DELETE, POST"),
        ("PUT", "/api/v1/auth", "DELETE, POST"),
        ("GET", "/api/v1/auth/token", "POST"),
        ("DELETE", "/api/v1/auth/token", "POST"),
        ("POST", "/healthz", "GET, HEAD"),
        ("POST", "/api/v1/_me", "GET, HEAD"),
        ("PUT", "/api/v1/_users", "GET, HEAD, POST"),
        ("PUT", f"/api/v1/_users/{SOME_ID}", "DELETE, GET, HEAD, PATCH"),
        ("PATCH", "/api/v1/_tokens", "GET, HEAD, POST"),
        ("GET", f"/api/v1/_tokens/{SOME_ID}", "DELETE"),
        ("PUT", "/api/v1/things", "GET, HEAD, POST"),
        ("DELETE", "/api/v1/things", "GET, HEAD, POST"),
        ("PUT", f"/api/v1/things/{SOME_ID}", "DELETE, GET, HEAD, PATCH"),
        ("GET", f"/api/v1/things/{SOME_ID}/access", "PUT"),
    ],
)
async def test_wrong_methods_are_405_with_allow(client, admin, method, path, allow):
    for caller in (client, admin.client):
        response = await caller.request(method, path)
        assert_api_error(response, 405, "METHOD_NOT_ALLOWED")
        assert response.headers["allow"] == allow


async def test_head_is_answered_where_get_is(client, admin, store):
    made = (await admin.post(f"/api/v1/{store}", json={"a": 1})).json()
    for caller, path in [
        (client, "/healthz"),
        (admin.client, "/api/v1/_me"),
        (admin.client, f"/api/v1/{store}"),
        (admin.client, f"/api/v1/{store}/{made['_id']}"),
        (admin.client, "/api/v1/_users"),
    ]:
        response = await caller.head(path)
        assert response.status_code == 200, (path, response.text)
    refused = await client.head("/api/v1/_me")  # no body to read with HEAD
    assert refused.status_code == 401 and refused.headers["x-request-id"]


# --- bodies over the limit ---------------------------------------------------------------------


async def test_bodies_over_max_body_bytes_are_413(app, admin, store, mongodb_url, tmp_path):
    small = make_settings(mongodb_url, tmp_path, MAX_BODY_BYTES="100")
    token = await sign_in_for_token(app, admin.login, admin.password)

    async def chunked(size: int):
        for _ in range(size // 20):
            yield b" " * 20

    async with running(small) as limited, token_client(limited, token) as api:
        declared = await api.post(f"/api/v1/{store}", json={"blob": "x" * 120})
        assert int(declared.request.headers["content-length"]) > 100
        assert_api_error(declared, 413, "TOO_LARGE")

        streamed = await api.post(
            f"/api/v1/{store}",
            content=chunked(200),
            headers={"Content-Type": "application/json"},
        )
        assert "content-length" not in streamed.request.headers
        assert streamed.request.headers["transfer-encoding"] == "chunked"
        assert_api_error(streamed, 413, "TOO_LARGE")

        async with client_for(limited, address=fresh_address()) as anonymous:
            big_sign_in = {"login": admin.login, "password": "p" * 200}
            response = await anonymous.post("/api/v1/auth", json=big_sign_in)
            assert_api_error(response, 413, "TOO_LARGE")

        assert (await api.get(f"/api/v1/{store}")).json() == []
        fits = await api.post(f"/api/v1/{store}", json={"blob": "x" * 50})
        assert fits.status_code == 201, fits.text


# --- request ids -------------------------------------------------------------------------------


async def test_every_response_carries_a_request_id(client, admin, store):
    responses = [
        await client.get("/healthz"),
        await client.get("/api/v1/_me"),
        await client.get("/nope"),
        await client.get("/api/v1/auth"),
        await admin.get("/api/v1/_me"),
        await admin.post(f"/api/v1/{store}", json={"a": 1}),
        await admin.get(f"/api/v1/{store}"),
        await admin.post(f"/api/v1/{store}", json={"$bad": 1}),
    ]
    ids = [response.headers.get("x-request-id") for response in responses]
    assert all(ids) and len(set(ids)) == len(ids)


async def test_a_sane_client_request_id_is_echoed_and_an_insane_one_replaced(client):
    for path, status in (("/healthz", 200), ("/api/v1/_me", 401)):
        sane = await client.get(path, headers={"X-Request-Id": "client-trace.42"})
        assert sane.status_code == status
        assert sane.headers["x-request-id"] == "client-trace.42"
        for insane in ("z" * 300, "two words", "ctl\x01char"):
            response = await client.get(path, headers=[(b"X-Request-Id", insane.encode())])
            assert response.status_code == status
            assert response.headers["x-request-id"] not in ("", insane)
    body = assert_api_error(
        await client.get("/nope", headers={"X-Request-Id": "client-trace.43"}), 404, "NOT_FOUND"
    )
    assert body["requestId"] == "client-trace.43"


# --- health and an unreachable database --------------------------------------------------------


async def test_healthz_is_ok_without_credentials(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"status": "ok"}


async def test_an_unreachable_database_is_503_until_it_returns(tmp_path):
    database = EmbeddedDatabase(tmp_path / "db", log_path=tmp_path / "secantusd.log")
    await asyncio.to_thread(database.start)
    try:
        # The URL's own option must win, or each request below waits the default 5 s.
        url = database.url + "&serverSelectionTimeoutMS=500"
        async with running(make_settings(url, tmp_path / "data")) as app:
            token = await sign_in_for_token(app, "admin", ADMIN_PASSWORD)
            async with token_client(app, token) as api:
                made = (await api.post("/api/v1/things", json={"a": 1})).json()
                path = f"/api/v1/things/{made['_id']}"
                assert (await api.get("/healthz")).json() == {"status": "ok"}

                await asyncio.to_thread(database.stop)
                started = time.monotonic()
                for probe in ("/healthz", path, "/api/v1/things"):
                    response = await api.get(probe)
                    assert_api_error(response, 503, "UNAVAILABLE")
                    assert int(response.headers["retry-after"]) >= 1
                assert time.monotonic() - started < 4.0

                await asyncio.to_thread(database.start)  # same port, same data
                await seconds_until(lambda: answers(api, 200, "/healthz"), limit=10.0)
                again = await api.get(path)
                assert again.status_code == 200 and again.json()["a"] == 1
    finally:
        await asyncio.to_thread(database.stop)
