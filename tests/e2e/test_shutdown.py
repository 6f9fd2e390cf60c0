"""Stopping a server that holds sockets: ``python -m app`` ends on SIGTERM within seconds,
whatever transport its Socket.IO clients use, and each of them is told that its connection
ended. A long-polling client has a request open for up to a ping interval (25 s) at any time;
before ``app.serving`` drained those sessions, each restart waited for them."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import httpx
import pytest

from tests.e2e.live import ADMIN_PASSWORD, process_env, server_process
from tests.e2e.sockets import WAIT, Listener
from tests.helpers import unique

pytestmark = pytest.mark.asyncio

STOPPED_WITHIN = 10.0  # the ping interval is 25 s: a poll left waiting would take longer


@pytest.mark.parametrize(
    "transports", [["polling"], ["polling", "websocket"], ["websocket"]], ids="+".join
)
async def test_a_server_holding_sockets_stops_within_seconds(mongodb_url, tmp_path, transports):
    env = process_env(mongodb_url, tmp_path / "data", "shutdown")
    processes: list[subprocess.Popen[bytes]] = []
    store = unique("stopping")
    async with server_process(env, tmp_path / "server.log", processes) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            login = {"login": "admin", "password": ADMIN_PASSWORD}
            token = (await http.post("/api/v1/auth/token", json=login)).json()["token"]
        listeners = [Listener() for _ in range(3)]
        for listener in listeners:
            await listener.sio.connect(
                url, auth={"token": token}, transports=transports, wait_timeout=WAIT
            )
            assert (await listener.subscribe(store=store))["success"] is True
            assert listener.sio.transport() == transports[-1]
        await asyncio.sleep(0.5)  # every long-polling client has its next poll waiting

        process = processes[0]
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        while process.poll() is None:
            assert time.monotonic() - started < STOPPED_WITHIN, "the server is still running"
            await asyncio.sleep(0.05)
        assert process.returncode == 0
        for listener in listeners:
            await asyncio.wait_for(listener.disconnected.wait(), WAIT)
            assert not listener.sio.connected
