"""RATE_LIMIT: requests per minute per credential, with RateLimit-* headers and 429."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import client_for, make_settings
from tests.e2e.support import running
from tests.helpers import assert_api_error

pytestmark = pytest.mark.asyncio


async def test_off_by_default(admin):
    response = await admin.get("/api/v1/_me")
    assert response.status_code == 200 and "ratelimit-limit" not in response.headers


async def test_each_credential_gets_its_own_budget(settings, admin, make_user, tmp_path):
    user = await make_user()
    limited = make_settings(settings.mongodb_url, tmp_path, RATE_LIMIT="5")
    async with running(limited) as other, client_for(other) as client, client_for(other) as second:
        client.headers["Authorization"] = admin.client.headers["Authorization"]
        second.headers["Authorization"] = user.client.headers["Authorization"]
        remaining = []
        for _ in range(5):
            response = await client.get("/api/v1/_me")
            assert response.status_code == 200
            assert response.headers["ratelimit-limit"] == "5"
            assert 1 <= int(response.headers["ratelimit-reset"]) <= 60
            remaining.append(int(response.headers["ratelimit-remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        refused = await client.get("/api/v1/_me")
        body = assert_api_error(refused, 429, "TOO_MANY_REQUESTS")
        assert "5 requests a minute" in body["message"]
        assert refused.headers["retry-after"] == refused.headers["ratelimit-reset"]
        assert refused.headers["ratelimit-remaining"] == "0"
        # Another credential, and requests outside the API, are not held back.
        assert (await second.get("/api/v1/_me")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        anonymous = await client.get("/api/v1/_me", headers={"Authorization": ""})
        assert anonymous.status_code == 401 and anonymous.headers["ratelimit-remaining"] == "4"
