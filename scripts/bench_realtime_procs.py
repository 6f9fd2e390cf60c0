"""The realtime benchmark's child processes (the server, the client workers) and what /proc
says about them: resident memory and CPU time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson

from app.embedded import free_port

HOST = "127.0.0.1"
WORKER = Path(__file__).with_name("bench_realtime_worker.py")
_STARTED = time.monotonic()


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def say(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def raise_fd_limit(wanted: int) -> None:
    """Lift the soft open-file limit to ``wanted`` (capped by the hard one); children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        say(f"raised the open-file limit from {soft} to {target}")


def start_server(
    db_url: str, workdir: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str, str]:
    """``python -m app`` on a free port over ``db_url``; returns it, its URL, the admin password."""
    password = secrets.token_urlsafe(16)
    port = free_port(HOST)
    env = {
        **os.environ,
        "MONGODB_URL": db_url,
        "APP_SECRET": secrets.token_urlsafe(48),
        "APP_ADMIN_LOGIN": "admin",
        "APP_ADMIN_PASSWORD": password,
        "DATA_DIR": str(workdir / "server"),
        "HOST": HOST,
        "PORT": str(port),
        "LOG_LEVEL": "warning",
        # Every subscriber signs in as the one admin: past the per-user socket limit.
        "MAX_SOCKETS_PER_USER": "1000000",
        "MAX_SOCKETS": "1000000",
        **(extra_env or {}),
    }
    with (workdir / "server.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop it, in order
        )
    return process, f"http://{HOST}:{port}", password


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 15.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def _stat_fields(pid: int) -> list[str]:
    # Fields from the third (state) on; the command name before them may hold spaces.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def machine_busy_seconds() -> float:
    """CPU time used by all processes, summed over the machine's CPUs."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


class CpuMeter:
    """Shares of one core used by each of our processes, and by everything else on the
    machine (other load skews the numbers), from creation to ``shares()``."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.began = time.monotonic()
        self.first = self._sample()

    def _sample(self) -> dict[str, float]:
        sample = {}
        for name, pid in self.pids.items():
            try:
                sample[name] = cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited meanwhile: left out of the shares
        sample["machine"] = machine_busy_seconds()
        return sample

    def shares(self) -> dict[str, float]:
        span = time.monotonic() - self.began
        last = self._sample()
        used = {name: (last[name] - self.first[name]) / span for name in last if name in self.first}
        machine = used.pop("machine")
        used["others"] = max(0.0, machine - sum(used.values()))
        return used


class Worker:
    """A ``bench_realtime_worker.py`` child and its JSON-line channel."""

    spawned: ClassVar[list[int]] = []  # every worker pid, for a last check after the loop

    def __init__(self, process: asyncio.subprocess.Process, out: Path):
        self.process = process
        self.out = out

    @classmethod
    async def spawn(cls, args: list[str], out: Path, lifetime: float, token: str = "") -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            *args,
            "--out",
            str(out),
            "--deadline",
            f"{lifetime:.0f}",
            env={**os.environ, "BENCH_TOKEN": token},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        cls.spawned.append(process.pid)
        return cls(process, out)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def receive(self, within: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), within)
        except TimeoutError:
            raise BenchError(f"worker {self.pid} silent for {within:.0f}s") from None
        if not line:
            code = await asyncio.wait_for(self.process.wait(), 5)
            raise BenchError(f"worker {self.pid} exited with code {code}")
        message: dict[str, Any] = orjson.loads(line)
        return message

    async def finish(self, expect: int, drain: float) -> dict[str, Any]:
        """Tell the worker how many writes to wait for; its receipts once it has them."""
        assert self.process.stdin is not None
        self.process.stdin.write(orjson.dumps({"expect": expect, "drain": drain}) + b"\n")
        await self.process.stdin.drain()
        await self.receive(drain + 30)
        result: dict[str, Any] = orjson.loads(await asyncio.to_thread(self.out.read_bytes))
        return result

    async def stop(self) -> None:
        if self.process.returncode is not None:
            return
        if self.process.stdin is not None:
            self.process.stdin.close()  # on EOF a worker closes its clients and ends
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            self.process.kill()
            await asyncio.wait_for(self.process.wait(), 5)

    @classmethod
    def kill_leftovers(cls) -> None:
        """SIGKILL any worker still alive and still our child (so never a reused pid)."""
        for pid in cls.spawned:
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(_stat_fields(pid)[1]) == os.getpid():
                    os.kill(pid, signal.SIGKILL)


async def wait_healthy(http: httpx.AsyncClient, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        if server.poll() is not None:
            raise BenchError(f"the server exited with code {server.returncode}")
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise BenchError("the server did not answer /healthz within 30s")
        await asyncio.sleep(0.1)


async def sign_in(http: httpx.AsyncClient, password: str) -> str:
    reply = await http.post("/api/v1/auth/token", json={"login": "admin", "password": password})
    if reply.status_code != 200:
        raise BenchError(f"sign-in failed: {reply.status_code} {reply.text}")
    return str(reply.json()["token"])
