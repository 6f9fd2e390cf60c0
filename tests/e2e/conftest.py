"""The app under test: one ASGI app (with its lifespan) on the session's database, clients
that call it over HTTP, and a factory for users with their own tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from app.main import create_app
from app.settings import Settings
from tests.e2e.live import ADMIN_PASSWORD, LiveServer, live_server
from tests.helpers import User, unique

Client = Callable[..., httpx.AsyncClient]


def make_settings(mongodb_url: str, data_dir: Path, **overrides: str) -> Settings:
    env = {
        "MONGODB_URL": mongodb_url,
        "MONGODB_DB": "e2e",
        "DATA_DIR": str(data_dir),
        "APP_SECRET": "test-secret-0123456789-0123456789",
        "APP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        # Servers in the test process itself leave its collector alone (tests of their own
        # start ``python -m app`` with the default).
        "GC_FREEZE_SECONDS": "0",
        **overrides,
    }
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def settings(mongodb_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(mongodb_url, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def client_for(app: Starlette, address: str = "127.0.0.1", **kw: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", **kw)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as anonymous:
        yield anonymous


async def bearer_client(app: Starlette, login: str, password: str) -> httpx.AsyncClient:
    async with client_for(app) as anonymous:
        response = await anonymous.post(
            "/api/v1/auth/token", json={"login": login, "password": password}
        )
    assert response.status_code == 200, response.text
    return client_for(app, headers={"Authorization": f"Bearer {response.json()['token']}"})


@pytest.fixture(scope="session")
async def admin(app: Starlette) -> AsyncIterator[User]:
    client = await bearer_client(app, "admin", ADMIN_PASSWORD)
    me = (await client.get("/api/v1/_me")).json()
    yield User(me["id"], "admin", ADMIN_PASSWORD, client)
    await client.aclose()


MakeUser = Callable[..., Awaitable[User]]


async def create_user(
    app: Starlette,
    admin: User,
    groups: list[str] | None = None,
    branches: list[str] | None = None,
    **extra: Any,
) -> User:
    """A new user, made by the admin, with a bearer client the caller must close."""
    login, password = unique("user"), "password-" + unique("p")
    body = {
        "login": login,
        "password": password,
        "groups": groups or [],
        "branches": branches or [],
        **extra,
    }
    response = await admin.post("/api/v1/_users", json=body)
    assert response.status_code == 201, response.text
    client = await bearer_client(app, login, password)
    return User(response.json()["id"], login, password, client, groups or [], branches or [])


@pytest.fixture
async def make_user(app: Starlette, admin: User) -> AsyncIterator[MakeUser]:
    made: list[User] = []

    async def make(
        groups: list[str] | None = None, branches: list[str] | None = None, **extra: Any
    ) -> User:
        user = await create_user(app, admin, groups, branches, **extra)
        made.append(user)
        return user

    yield make
    for user in made:
        await user.client.aclose()


@pytest.fixture
def store() -> str:
    """A fresh store name per test."""
    return unique("store")


@pytest.fixture(scope="session")
async def live(settings: Settings) -> AsyncIterator[LiveServer]:
    """The app served by a real uvicorn on 127.0.0.1 (a second instance on the same database
    as ``app``), for websocket clients."""
    async with live_server(settings) as server:
        yield server
