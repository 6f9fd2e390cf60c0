"""Realtime across a database restart: the server's change stream reopens from its last
token, and a client's resume token still replays what it missed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from app.embedded import EmbeddedDatabase
from tests.e2e.conftest import ADMIN_PASSWORD, make_settings
from tests.e2e.live import live_server
from tests.e2e.sockets import listening

pytestmark = pytest.mark.asyncio
STORE = "restarted"


async def _post(http: httpx.AsyncClient, n: int) -> str:
    """Create an entity, retrying while the database comes back."""
    for _ in range(150):
        response = await http.post(f"/api/v1/{STORE}", json={"n": n, "access": ["*"]})
        if response.status_code == 201:
            return str(response.json()["_id"])
        assert response.status_code == 503, response.text
        await asyncio.sleep(0.2)
    raise AssertionError("the database did not come back")


async def _sign_in_as_admin(http: httpx.AsyncClient) -> str:
    login = {"login": "admin", "password": ADMIN_PASSWORD}
    token = str((await http.post("/api/v1/auth/token", json=login)).json()["token"])
    http.headers["Authorization"] = f"Bearer {token}"
    return token


async def test_nothing_is_lost_across_a_database_restart(tmp_path: Path):
    database = EmbeddedDatabase(tmp_path / "db", log_path=tmp_path / "db.log")
    database.start()
    try:
        url = database.url + "&serverSelectionTimeoutMS=1000"
        settings = make_settings(url, tmp_path / "data", MONGODB_DB="restart")
        async with live_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
            token = await _sign_in_as_admin(http)

            async with listening(server.url, auth={"token": token}) as staying:
                await staying.subscribe(store=STORE)
                async with listening(server.url, auth={"token": token}) as leaving:
                    await leaving.subscribe(store=STORE)
                    w0 = await _post(http, 0)
                    resume = (await leaving.next())["resume"]
                assert (await staying.next())["id"] == w0

                w1 = await _post(http, 1)
                await asyncio.to_thread(database.restart)
                later = [await _post(http, n) for n in (2, 3)]

                got = [(await staying.next(wait=20))["id"] for _ in range(3)]
                assert got == [w1, *later]
                await staying.nothing()

            async with listening(server.url, auth={"token": token}) as back:
                assert (await back.subscribe(store=STORE, resume=resume))["success"] is True
                replayed = [(await back.next())["id"] for _ in range(3)]
                assert replayed == [w1, *later]
                await back.nothing()
    finally:
        database.stop()


async def test_a_resume_token_older_than_the_history_is_refused(tmp_path: Path):
    # Keep at most 10 oplog entries, so history is lost quickly.
    database = EmbeddedDatabase(
        tmp_path / "db", log_path=tmp_path / "db.log", extra_args=["--oplog-max-entries", "10"]
    )
    database.start()
    try:
        settings = make_settings(database.url, tmp_path / "data", MONGODB_DB="expiry")
        async with live_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
            token = await _sign_in_as_admin(http)
            async with listening(server.url, auth={"token": token}) as socket:
                await socket.subscribe(store=STORE)
                await _post(http, 0)
                resume = (await socket.next())["resume"]
            for n in range(1, 30):
                await _post(http, n)
            storage = server.app.state.services.storage
            await storage.client.admin.command("secantusAdmin.pruneOplog")
            async with listening(server.url, auth={"token": token}) as socket:
                ack = await socket.subscribe(store=STORE, resume=resume)
                assert ack["success"] is False
                assert ack["error"] == "RESUME_EXPIRED", ack
                assert socket.sio.connected
    finally:
        database.stop()
