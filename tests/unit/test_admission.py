"""Admission: which lane a request takes, how a full lane sheds, and that a client who goes
away cancels its request's work, driven through the ASGI interface."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.admission import Admission, Lane, classify
from app.settings import Settings

DEFAULT_LIMITS = Settings.from_env({}).limits()


@pytest.mark.parametrize(
    ("method", "path", "lane"),
    [
        ("GET", "/api/v1/orders", "list"),
        ("GET", "/api/v1/orders/", "list"),
        ("HEAD", "/api/v1/orders", "list"),
        ("GET", "/api/v1/orders/65f0aaaaaaaaaaaaaaaaaaaa", "read"),
        ("GET", "/api/v1/_users", "read"),
        ("GET", "/api/v1/_me", "read"),
        ("POST", "/api/v1/orders", "write"),
        ("PATCH", "/api/v1/orders/1", "write"),
        ("DELETE", "/api/v1/orders/1", "write"),
        ("POST", "/api/v1/auth", "write"),
        ("GET", "/healthz", None),
        ("GET", "/socket.io/", None),
        ("POST", "/socket.io/", None),
    ],
)
def test_lanes(method, path, lane):
    assert classify(method, path)[0] == lane


@pytest.mark.parametrize(
    ("method", "path", "point"),
    [
        ("GET", "/api/v1/orders/65f0aaaaaaaaaaaaaaaaaaaa", True),
        ("HEAD", "/api/v1/orders/65f0aaaaaaaaaaaaaaaaaaaa/", True),
        ("PATCH", "/api/v1/orders/65f0aaaaaaaaaaaaaaaaaaaa", True),
        ("DELETE", "/api/v1/orders/65f0aaaaaaaaaaaaaaaaaaaa", True),
        ("POST", "/api/v1/orders", True),
        ("POST", "/api/v1/orders/", True),
        ("PUT", "/api/v1/orders", False),
        ("POST", "/api/v1/orders/_bulk", False),
        ("PUT", "/api/v1/orders/65f0aaaaaaaaaaaaaaaaaaaa/access", False),
        ("POST", "/api/v1/auth", False),
        ("POST", "/api/v1/auth/token", False),
        ("POST", "/api/v1/_users", False),
        ("PATCH", "/api/v1/_users/u1", False),
        ("PUT", "/api/v1/_stores/orders", False),
        ("POST", "/api/v2/orders", False),
        ("GET", "/api/v1/orders", False),
        ("GET", "/api/v1/orders/_changes", False),
        ("GET", "/api/v1/_users/u1", False),
        ("GET", "/api/v1/orders/65f0aaaaaaaaaaaaaaaaaaaa/_history", False),
        ("GET", "/api/docs/assets/page.js", False),
    ],
)
def test_only_requests_on_one_entity_are_point_requests(method, path, point):
    """A GET, PATCH or DELETE of one entity and a POST of one entity run under their own
    request deadline; everything else under the driver's client-side timeout (which also
    stops the database's work)."""
    assert classify(method, path)[1] is point


async def test_a_full_lane_admits_as_many_waiters_as_slots_then_sheds():
    lane = Lane("list", 2)
    assert await lane.enter(0.05) and await lane.enter(0.05)
    waiting = [asyncio.create_task(lane.enter(1.0)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert [t.done() for t in waiting] == [False, False, True]  # the third is shed at once
    assert waiting[2].result() is False
    lane.leave()
    assert await waiting[0] is True
    lane.leave()
    assert await waiting[1] is True  # waiters are served in order


async def test_a_waiter_gives_up_after_the_wait():
    lane = Lane("write", 1)
    assert await lane.enter(0.05)
    started = asyncio.get_running_loop().time()
    assert await lane.enter(0.05) is False
    assert asyncio.get_running_loop().time() - started < 0.5
    lane.leave()
    assert await lane.enter(0.05)


async def test_slots_are_never_lost_when_waiters_give_up_or_are_cancelled():
    lane = Lane("read", 2)
    assert lane.try_enter() and lane.try_enter() and not lane.try_enter()
    gave_up = asyncio.create_task(lane.enter(0.02))
    cancelled = asyncio.create_task(lane.enter(5))
    await asyncio.sleep(0.005)
    cancelled.cancel()  # its client went away while it waited
    assert await gave_up is False
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    lane.leave()
    lane.leave()
    assert (lane.running, lane.waiting) == (0, 0)
    assert lane.try_enter() and lane.try_enter() and not lane.try_enter()


async def test_a_slot_handed_to_a_waiter_that_is_cancelled_passes_to_the_next():
    lane = Lane("read", 2)
    assert lane.try_enter() and lane.try_enter()
    first = asyncio.create_task(lane.enter(5))
    second = asyncio.create_task(lane.enter(5))
    await asyncio.sleep(0.005)
    lane.leave()  # the slot goes to ``first``...
    first.cancel()  # ...which is cancelled before it could run
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second is True
    assert lane.running == 2
    lane.leave()
    lane.leave()
    assert (lane.running, lane.waiting) == (0, 0)


def _app(events: list[str]) -> Starlette:
    async def slow(request: Request) -> JSONResponse:
        events.append("started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        return JSONResponse({"ok": True})

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"got": len(await request.body())})

    async def slow_write(request: Request) -> JSONResponse:
        await request.body()
        return await slow(request)

    routes = [
        Route("/api/v1/slow/{x}", slow),
        Route("/api/v1/slow/{x}", slow_write, methods=["POST"]),
        Route("/api/v1/x", echo, methods=["POST"]),
    ]
    return Starlette(routes=routes)


async def _call(app: Any, method: str, path: str, messages: list[dict[str, Any]]):
    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b"",
             "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1),
             "root_path": "", "raw_path": path.encode(), "asgi": {"version": "3.0"}}  # fmt: skip
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return await queue.get()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return queue, sent, asyncio.create_task(app(scope, receive, send))


async def test_a_client_that_goes_away_cancels_its_request():
    events: list[str] = []
    app = Admission(_app(events), dataclasses.replace(DEFAULT_LIMITS, reads=1))
    queue, sent, task = await _call(
        app, "GET", "/api/v1/slow/1", [{"type": "http.request", "body": b"", "more_body": False}]
    )
    await asyncio.sleep(0.05)
    assert events == ["started"]
    # Meanwhile the lane is full: another read is shed with a 503.
    _, shed, other = await _call(
        app, "GET", "/api/v1/slow/2", [{"type": "http.request", "body": b""}]
    )
    await asyncio.wait_for(other, 1)
    assert shed[0]["status"] == 503
    assert dict(shed[0]["headers"])[b"retry-after"] == b"1"
    assert orjson.loads(shed[1]["body"])["error"] == "UNAVAILABLE"

    queue.put_nowait({"type": "http.disconnect"})
    await asyncio.wait_for(task, 1)  # returns quietly, nothing sent
    assert events == ["started", "cancelled"] and sent == []
    assert app.lanes["read"].running == 0


async def test_a_client_that_goes_away_after_sending_a_body_cancels_its_request():
    events: list[str] = []
    app = Admission(_app(events), DEFAULT_LIMITS)
    body = [{"type": "http.request", "body": b"{}", "more_body": False}]
    queue, sent, task = await _call(app, "POST", "/api/v1/slow/1", body)
    await asyncio.sleep(0.01)
    assert events == ["started"]
    queue.put_nowait({"type": "http.disconnect"})  # before the watch starts: it reads it then
    await asyncio.wait_for(task, 1)
    assert events == ["started", "cancelled"] and sent == []
    assert app.lanes["write"].running == 0


async def test_bodies_are_read_by_the_app_and_the_request_completes():
    app = Admission(_app([]), DEFAULT_LIMITS)
    chunks = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cde", "more_body": False},
    ]
    _, sent, task = await _call(app, "POST", "/api/v1/x", chunks)
    await asyncio.wait_for(task, 1)
    assert sent[0]["status"] == 200 and orjson.loads(sent[1]["body"]) == {"got": 5}
    assert app.lanes["write"].running == 0
