"""``WORKERS=2``: two server processes on one port, each with its own change stream, so a
subscriber on either process hears of writes made through either; long-polling is off."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ADMIN_PASSWORD
from tests.e2e.live import process_env, server_process
from tests.e2e.sockets import listening
from tests.helpers import unique

pytestmark = pytest.mark.asyncio


def _workers(pid: int) -> list[str]:
    """The command lines of ``pid``'s worker processes (multiprocessing's spawned children),
    read from /proc (``ps`` cuts long lines when its output is not a terminal)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit():
                continue
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        if parent == pid and "spawn_main" in command:
            found.append(command)
    return found


async def test_two_workers_serve_one_port_and_every_subscriber_hears_every_write(
    mongodb_url, tmp_path
):
    env = process_env(mongodb_url, tmp_path / "data", "workers", WORKERS="2")
    store = unique("shared")
    processes: list[subprocess.Popen[bytes]] = []
    async with (
        server_process(env, tmp_path / "server.log", processes) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        login = {"login": "admin", "password": ADMIN_PASSWORD}
        token = (await http.post("/api/v1/auth/token", json=login)).json()["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        # Several sockets: the kernel spreads their connections over both workers.
        sockets = [listening(url, auth={"token": token}) for _ in range(6)]
        opened = [await s.__aenter__() for s in sockets]
        try:
            for socket in opened:
                assert (await socket.subscribe(store=store))["success"] is True
            made = []
            for n in range(6):  # fresh connections, so both workers take writes
                async with httpx.AsyncClient(base_url=url, headers=http.headers) as one:
                    made.append((await one.post(f"/api/v1/{store}", json={"n": n})).json())
            for socket in opened:
                got = [(await socket.next())["id"] for _ in made]
                assert got == [m["_id"] for m in made]
        finally:
            for s in sockets:
                await s.__aexit__(None, None, None)
        polling = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        assert polling.status_code == 400
        assert len(_workers(processes[0].pid)) == 2
