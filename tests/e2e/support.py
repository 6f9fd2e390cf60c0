"""Helpers for the auth, token, user and error suites: extra app instances on the shared
database, cookie sign-in, raw database access and bounded polling."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pymongo import AsyncMongoClient
from starlette.applications import Starlette

from app.main import create_app
from app.settings import Settings
from tests.e2e.conftest import client_for

_addresses = itertools.count(1)


def fresh_address() -> str:
    """A client address no other test signs in from, so failure counts never meet."""
    n = next(_addresses)
    return f"10.9.{n // 250}.{n % 250 + 1}"


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Starlette]:
    """Another server instance, its lifespan running for the duration of the block."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@asynccontextmanager
async def raw_database(url: str, name: str = "e2e") -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, tz_aware=True)
    try:
        yield client[name]
    finally:
        await client.close()


def sid_of(response: httpx.Response) -> str:
    match = re.match(r"sid=([^;]+);", response.headers["set-cookie"])
    assert match, response.headers["set-cookie"]
    return match.group(1)


async def sign_in(app: Starlette, login: str, password: str) -> str:
    """A session id from ``POST /api/v1/auth``."""
    async with client_for(app, address=fresh_address()) as anonymous:
        response = await anonymous.post("/api/v1/auth", json={"login": login, "password": password})
    assert response.status_code == 200, response.text
    return sid_of(response)


async def token_for(app: Starlette, login: str, password: str) -> str:
    async with client_for(app, address=fresh_address()) as anonymous:
        response = await anonymous.post(
            "/api/v1/auth/token", json={"login": login, "password": password}
        )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def cookie_client(app: Starlette, sid: str, **kw: Any) -> httpx.AsyncClient:
    headers = {"Cookie": f"sid={sid}", **kw.pop("headers", {})}
    return client_for(app, address=fresh_address(), headers=headers, **kw)


def token_client(app: Starlette, token: str) -> httpx.AsyncClient:
    return client_for(app, address=fresh_address(), headers={"Authorization": f"Bearer {token}"})


async def seconds_until(
    condition: Callable[[], Awaitable[bool]], limit: float, interval: float = 0.1
) -> float:
    """Poll ``condition`` until it holds; the seconds it took. Fails after ``limit`` + 1 s so
    a broken rule ends the test instead of hanging it."""
    started = time.monotonic()
    while not await condition():
        elapsed = time.monotonic() - started
        assert elapsed < limit + 1.0, f"still not true after {elapsed:.1f}s"
        await asyncio.sleep(interval)
    return time.monotonic() - started


async def status_of(client: httpx.AsyncClient, url: str = "/api/v1/_me") -> int:
    return (await client.get(url)).status_code


async def answers(client: httpx.AsyncClient, status: int, url: str = "/api/v1/_me") -> bool:
    return await status_of(client, url) == status
