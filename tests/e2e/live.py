"""A real uvicorn server for websocket tests: in this process (sharing the test's event loop)
or as a separate ``python -m app`` process, always on a free 127.0.0.1 port."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from app import serving
from app.__main__ import server_options
from app.main import create_app
from app.settings import Settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LiveServer:
    def __init__(self, app: Any, port: int, server: serving.Server | None = None):
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = server


@asynccontextmanager
async def live_server(settings: Settings):
    """Serve a fresh app for ``settings`` with uvicorn inside the running event loop."""
    app = create_app(settings)
    port = free_port()
    # The options ``python -m app`` serves with, on a free port of the test's own.
    options = {**server_options(settings), "host": "127.0.0.1", "port": port}
    config = uvicorn.Config(app, **{**options, "log_level": "warning"})
    server = serving.Server(config, drain=app.state.hub.drain)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 20
    while not server.started:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        yield LiveServer(app, port, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


ADMIN_PASSWORD = "admin-password-1"  # the first admin's, in every server the tests start


def process_env(mongodb_url: str, data_dir: Path, db_name: str, **extra: str) -> dict[str, str]:
    """The environment of a ``python -m app`` test process on the session's database."""
    return {
        "MONGODB_URL": mongodb_url,
        "MONGODB_DB": db_name,
        "DATA_DIR": str(data_dir),
        "APP_SECRET": f"{db_name}-secret-0123456789-0123456789",
        "APP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LOG_LEVEL": "warning",
        **extra,
    }


@asynccontextmanager
async def server_process(
    env: dict[str, str], log_path: Path, processes: list[subprocess.Popen[bytes]] | None = None
):
    """``python -m app`` as its own OS process; stopped by its PID with SIGTERM (if it has not
    stopped already). The process is appended to ``processes`` when given."""
    port = free_port()
    full_env = {**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(port)}
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, waited on below
            [sys.executable, "-m", "app"], env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    if processes is not None:
        processes.append(process)
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as client:
            while True:
                assert process.poll() is None, f"server exited; see {log_path}"
                try:
                    if (await client.get(f"{url}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server process did not start"
                await asyncio.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
