"""Fixtures shared by the unit and end-to-end suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.embedded import EmbeddedDatabase

# --- database ---


@pytest.fixture(scope="session")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedDatabase]:
    """One SecantusDB server for the whole session, on a free port in a temporary directory."""
    root = tmp_path_factory.mktemp("database")
    with EmbeddedDatabase(root / "db", log_path=root / "secantusd.log") as db:
        yield db


@pytest.fixture(scope="session")
def mongodb_url(database: EmbeddedDatabase) -> str:
    return database.url
