"""The database handle's client options: the URL's word wins over our defaults."""

from __future__ import annotations

import pytest

from app.storage import Storage

pytestmark = pytest.mark.asyncio

URL = "mongodb://127.0.0.1:9/?directConnection=true"


async def test_default_timeouts_apply_when_the_url_sets_none():
    storage = Storage(URL, "db", timeout_ms=1234)
    try:
        options = storage.client.options
        assert options.server_selection_timeout == pytest.approx(1.234)
        assert options.pool_options.connect_timeout == pytest.approx(1.234)
    finally:
        await storage.close()


@pytest.mark.parametrize(
    "query", ["serverSelectionTimeoutMS=500&connectTimeoutMS=500", "SERVERSELECTIONTIMEOUTMS=500"]
)
async def test_timeouts_in_the_url_win(query):
    storage = Storage(f"{URL}&{query}", "db", timeout_ms=5000)
    try:
        assert storage.client.options.server_selection_timeout == pytest.approx(0.5)
        expected_connect = 0.5 if "connectTimeoutMS" in query else 5.0
        assert storage.client.options.pool_options.connect_timeout == pytest.approx(
            expected_connect
        )
    finally:
        await storage.close()
