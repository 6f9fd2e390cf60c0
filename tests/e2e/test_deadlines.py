"""``DB_TIMEOUT_MS`` against a database that stops answering (its process paused with
SIGSTOP): a request on one entity (its own request deadline) and any other request (the
driver's client-side timeout) are answered 503 with ``Retry-After`` soon after the deadline,
and once the database answers again, so does the API."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app import idempotency as idempotency_module
from app.acl import Principal
from app.embedded import EmbeddedDatabase
from tests.e2e.conftest import ADMIN_PASSWORD, client_for, make_settings
from tests.e2e.support import running

pytestmark = [
    pytest.mark.asyncio,
    # Cancelling the driver while it opens a connection leaves that socket to the garbage
    # collector (PyMongo 4.20.1; mongo-python-driver PR 2858, PYTHON-5867, is the fix), and
    # these tests cancel driver calls against a paused database on purpose.
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
]

DEADLINE_MS = 700


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[EmbeddedDatabase]:
    """A database of this test's own: pausing it must not stall the others' tests."""
    db = EmbeddedDatabase(tmp_path / "db")
    db.start()
    try:
        yield db
    finally:
        if db.pid is not None:
            os.kill(db.pid, signal.SIGCONT)
        db.stop()


async def test_requests_past_the_deadline_get_503_and_recover(database, tmp_path):
    settings = make_settings(
        database.url, tmp_path / "data", DB_TIMEOUT_MS=str(DEADLINE_MS), MONGODB_DB="deadlines"
    )
    assert database.pid is not None
    async with running(settings) as app, client_for(app, timeout=30) as http:
        login = {"login": "admin", "password": ADMIN_PASSWORD}
        token = (await http.post("/api/v1/auth/token", json=login)).json()["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        made = (await http.post("/api/v1/notes", json={"n": 1})).json()
        path = f"/api/v1/notes/{made['_id']}"
        assert (await http.get(path)).status_code == 200

        os.kill(database.pid, signal.SIGSTOP)
        try:
            for method, target, headers in (
                ("GET", path, {}),
                ("GET", "/api/v1/_users", {}),
                ("PATCH", path, {}),
                ("POST", "/api/v1/notes", {}),
                # With a key, the claim comes first; it is bounded by the deadline too.
                ("POST", "/api/v1/notes", {"Idempotency-Key": "paused-1"}),
                ("DELETE", "/api/v1/notes/" + "0" * 24, {}),
            ):
                started = time.monotonic()
                response = await http.request(method, target, json={"n": 2}, headers=headers)
                took = time.monotonic() - started
                assert response.status_code == 503, (target, response.text)
                body = response.json()
                assert body["code"] == "503" and body["error"] == "UNAVAILABLE", body
                assert response.headers["Retry-After"] == "1"
                assert response.headers["X-Request-Id"] == body["requestId"]
                assert DEADLINE_MS / 1000 * 0.9 <= took < DEADLINE_MS / 1000 + 2, (target, took)
            # Together: the first POST and GET go alone, the others wait behind them (one
            # call of a store at a time, app.coalesce); each is answered at its own deadline.
            started = time.monotonic()
            answers = await asyncio.gather(
                *(http.post("/api/v1/notes", json={"n": 3}) for _ in range(8)),
                *(http.get(path) for _ in range(8)),
            )
            took = time.monotonic() - started
            assert [a.status_code for a in answers] == [503] * 16, [a.text for a in answers]
            assert took < DEADLINE_MS / 1000 + 2, took
        finally:
            os.kill(database.pid, signal.SIGCONT)

        for _ in range(50):  # the dropped connections are replaced
            response = await http.get(path)
            if response.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert response.status_code == 200, response.text
        assert response.json()["n"] in (1, 2)  # the PATCH may have been applied late
        # Of the eight POSTs together, only the one on its way may land late: the seven
        # waiting behind it were given up before they were sent.
        await asyncio.sleep(0.5)
        counted = await http.get("/api/v1/notes", params={"meta": "true", "where": '{"n": 3}'})
        assert counted.json()["count"] <= 1, counted.text


async def test_a_key_whose_request_the_deadline_cancels_is_freed_in_bounded_time(
    database, tmp_path
):
    """A POST of one entity runs under its own deadline, which cancels it. A request with an
    Idempotency-Key then frees its key, with no driver deadline left to bound that: a
    database that stopped answering after the key was claimed must not hold the request
    past the deadline and ``RELEASE_S``."""
    settings = make_settings(database.url, tmp_path / "data", MONGODB_DB="released")
    assert database.pid is not None
    async with running(settings) as app:
        idempotency = app.state.services.idempotency
        user = Principal(user_id="u1", login="u1")
        paused = asyncio.Event()

        async def work() -> Any:
            os.kill(database.pid, signal.SIGSTOP)  # the key is claimed: now the database stops
            paused.set()
            await asyncio.sleep(3600)

        started = time.monotonic()
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await idempotency.run(user, "k1", "POST /api/v1/x", {"n": 1}, work, "r1")
            took = time.monotonic() - started
        finally:
            os.kill(database.pid, signal.SIGCONT)
        assert paused.is_set()
        assert took < 0.5 + idempotency_module.RELEASE_S + 1.0, took
