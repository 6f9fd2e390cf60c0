"""The request-id middleware and the error renderers on a small app of their own: 500s in the
envelope and logged with the request id, Starlette's routing errors in the envelope too."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from app.errors import Conflict
from app.main import App
from app.middleware import RequestContext
from tests.helpers import assert_api_error

pytestmark = pytest.mark.asyncio


async def explode(request: Request) -> JSONResponse:
    raise RuntimeError("secret internals: password=hunter2")


async def conflict(request: Request) -> JSONResponse:
    raise Conflict("Taken")


async def fine(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def explode_midway(request: Request) -> StreamingResponse:
    async def body():
        yield b"["
        raise RuntimeError("broke while streaming")

    return StreamingResponse(body(), media_type="application/json")


def tiny_app() -> Starlette:
    """Plain Starlette routes in the app's own stack: no Starlette error layers, so
    ``RequestContext`` renders everything a route raises."""
    return App(
        routes=[
            Route("/explode", explode),
            Route("/conflict", conflict),
            Route("/fine", fine, methods=["GET", "DELETE", "POST"]),
            Route("/midway", explode_midway),
        ],
        middleware=[Middleware(RequestContext)],
    )


def client(**kw) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=tiny_app())
    return httpx.AsyncClient(transport=transport, base_url="http://unit", **kw)


async def test_an_unexpected_exception_is_a_500_envelope_logged_with_the_request_id(caplog):
    caplog.set_level(logging.ERROR, logger="app.middleware")
    async with client() as http:
        response = await http.get("/explode", headers={"X-Request-Id": "trace-500-abc"})
    body = assert_api_error(response, 500, "INTERNAL")
    assert body["requestId"] == "trace-500-abc"
    assert body["tags"] == ["error_internal"]
    assert "secret internals" not in response.text and "RuntimeError" not in response.text
    logged = [record for record in caplog.records if "trace-500-abc" in record.getMessage()]
    assert len(logged) == 1
    assert logged[0].levelno == logging.ERROR
    assert logged[0].exc_info and logged[0].exc_info[0] is RuntimeError


async def test_a_500_without_a_client_request_id_logs_the_generated_one(caplog):
    caplog.set_level(logging.ERROR, logger="app.middleware")
    async with client() as http:
        response = await http.get("/explode")
    rid = assert_api_error(response, 500, "INTERNAL")["requestId"]
    assert any(rid in record.getMessage() for record in caplog.records)


async def test_a_failure_after_the_response_started_is_not_papered_over(caplog):
    caplog.set_level(logging.ERROR, logger="app.middleware")
    async with client() as http:
        with pytest.raises(RuntimeError, match="broke while streaming"):
            await http.get("/midway", headers={"X-Request-Id": "mid-1"})
    assert any("mid-1" in record.getMessage() for record in caplog.records)


async def test_api_errors_render_the_envelope():
    async with client() as http:
        body = assert_api_error(await http.get("/conflict"), 409, "CONFLICT")
    assert body["message"] == "Taken"


async def test_routing_errors_render_the_envelope_with_a_sorted_allow():
    async with client() as http:
        missing = await http.get("/nowhere")
        wrong = await http.put("/fine")
    assert assert_api_error(missing, 404, "NOT_FOUND")["tags"] == ["error_not_found"]
    assert_api_error(wrong, 405, "METHOD_NOT_ALLOWED")
    assert wrong.headers["allow"] == "DELETE, GET, HEAD, POST"


@pytest.mark.parametrize(
    "given",
    ["abc", "0f8fad5b-d9cb-469f-a165-70867728950e", "svc.a:b/c@d+e=f_g", "x" * 128],
)
async def test_a_sane_request_id_is_echoed(given):
    async with client() as http:
        response = await http.get("/fine", headers={"X-Request-Id": given})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == given


@pytest.mark.parametrize(
    "given",
    [
        "x" * 129,
        "has space",
        "tab\there",
        "bell\x07",
        "semi;colon",
        "<script>",
        'quote"d',
        "café",
        "",
    ],
)
async def test_an_insane_request_id_is_replaced(given):
    async with client() as http:
        response = await http.get("/fine", headers=[(b"X-Request-Id", given.encode())])
    replaced = response.headers["x-request-id"]
    assert replaced != given
    assert 8 <= len(replaced) <= 128 and replaced.isalnum()


async def test_request_ids_differ_between_requests():
    async with client() as http:
        ids = {(await http.get("/fine")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5
