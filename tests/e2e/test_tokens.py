"""Personal API tokens: issued once, listed without their secret, revoked everywhere."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta

import jwt
import pytest

from tests.e2e.conftest import create_user, make_settings
from tests.e2e.support import answers, running, seconds_until, status_of, token_client
from tests.helpers import assert_api_error

pytestmark = pytest.mark.asyncio

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
LISTED = {"id", "name", "createdAt", "expiresAt", "lastUsedAt"}


@pytest.fixture(scope="module")
async def member(app, admin):
    """One user for the tests that leave no token behind."""
    user = await create_user(app, admin)
    yield user
    await user.client.aclose()


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_create_shows_the_token_once_with_a_year_of_life(app, make_user, settings):
    user = await make_user()
    response = await user.post("/api/v1/_tokens", json={"name": "CRM sync"})
    assert response.status_code == 201, response.text
    made = response.json()
    assert set(made) == LISTED | {"token"}
    assert re.fullmatch(r"[0-9a-f]{24}", made["id"])
    assert response.headers["location"] == f"/api/v1/_tokens/{made['id']}"
    assert made["name"] == "CRM sync" and made["lastUsedAt"] is None
    assert ISO_MS.fullmatch(made["createdAt"]) and ISO_MS.fullmatch(made["expiresAt"])
    assert when(made["expiresAt"]) - when(made["createdAt"]) == timedelta(days=365)
    claims = jwt.decode(made["token"], settings.app_secret, algorithms=["HS256"])
    assert claims["sub"] == user.id and claims["jti"] == made["id"]

    async with token_client(app, made["token"]) as client:
        assert (await client.get("/api/v1/_me")).json()["id"] == user.id

    listed = (await user.get("/api/v1/_tokens")).json()
    assert [set(token) for token in listed] == [LISTED]
    assert listed[0]["id"] == made["id"] and listed[0]["name"] == "CRM sync"
    assert made["token"] not in (await user.get("/api/v1/_tokens")).text


async def test_expires_in_sets_the_lifetime(app, make_user):
    user = await make_user()
    made = (await user.post("/api/v1/_tokens", json={"name": "short", "expiresIn": 3600})).json()
    assert when(made["expiresAt"]) - when(made["createdAt"]) == timedelta(hours=1)


async def test_an_expired_personal_token_stops_working_and_leaves_the_list(app, make_user):
    user = await make_user()
    made = (await user.post("/api/v1/_tokens", json={"name": "brief", "expiresIn": 1})).json()
    async with token_client(app, made["token"]) as client:
        assert await status_of(client) == 200
        assert await seconds_until(lambda: answers(client, 401), limit=2.0) < 2.0
    assert (await user.get("/api/v1/_tokens")).json() == []


async def test_list_shows_only_the_callers_personal_tokens(app, make_user):
    first, second = await asyncio.gather(make_user(), make_user())
    mine = (await first.post("/api/v1/_tokens", json={"name": "mine"})).json()
    theirs = (await second.post("/api/v1/_tokens", json={"name": "theirs"})).json()
    assert [token["id"] for token in (await first.get("/api/v1/_tokens")).json()] == [mine["id"]]
    assert [t["id"] for t in (await second.get("/api/v1/_tokens")).json()] == [theirs["id"]]


async def test_last_used_at_is_recorded_after_use(app, make_user):
    user = await make_user()
    made = (await user.post("/api/v1/_tokens", json={"name": "used"})).json()
    async with token_client(app, made["token"]) as client:
        assert await status_of(client) == 200
    listed = (await user.get("/api/v1/_tokens")).json()
    used = listed[0]["lastUsedAt"]
    assert used is not None and ISO_MS.fullmatch(used)
    assert when(made["createdAt"]) <= when(used) <= when(made["createdAt"]) + timedelta(seconds=30)


async def test_revoking_stops_the_token_at_once_on_this_instance(app, make_user):
    user = await make_user()
    made = (await user.post("/api/v1/_tokens", json={"name": "gone soon"})).json()
    kept = (await user.post("/api/v1/_tokens", json={"name": "kept"})).json()
    async with (
        token_client(app, made["token"]) as doomed,
        token_client(app, kept["token"]) as keeper,
    ):
        assert await status_of(doomed) == 200  # cached from here on
        response = await user.delete(f"/api/v1/_tokens/{made['id']}")
        assert response.status_code == 200
        assert response.json() == {"success": True, "sucess": True}
        assert_api_error(await doomed.get("/api/v1/_me"), 401, "UNAUTHORIZED")
        assert await status_of(keeper) == 200
    assert [token["id"] for token in (await user.get("/api/v1/_tokens")).json()] == [kept["id"]]
    assert_api_error(await user.delete(f"/api/v1/_tokens/{made['id']}"), 404, "NOT_FOUND")


async def test_revoking_reaches_other_instances_within_five_seconds(
    app, make_user, mongodb_url, tmp_path
):
    user = await make_user()
    made = (await user.post("/api/v1/_tokens", json={"name": "shared"})).json()
    async with (
        running(make_settings(mongodb_url, tmp_path)) as other,
        token_client(other, made["token"]) as on_other,
    ):
        assert await status_of(on_other) == 200  # the other instance now caches it
        assert (await user.delete(f"/api/v1/_tokens/{made['id']}")).status_code == 200
        took = await seconds_until(lambda: answers(on_other, 401), limit=5.0)
        assert took < 5.0
        assert_api_error(await on_other.get("/api/v1/_me"), 401, "UNAUTHORIZED")


async def test_another_users_token_cannot_be_revoked(app, make_user):
    owner, other = await asyncio.gather(make_user(), make_user())
    made = (await owner.post("/api/v1/_tokens", json={"name": "private"})).json()
    assert_api_error(await other.delete(f"/api/v1/_tokens/{made['id']}"), 404, "NOT_FOUND")
    assert_api_error(
        await other.delete("/api/v1/_tokens/65f0aaaaaaaaaaaaaaaaaaaa"), 404, "NOT_FOUND"
    )
    async with token_client(app, made["token"]) as client:
        assert await status_of(client) == 200


async def test_access_tokens_are_not_personal_tokens(app, make_user):
    user = await make_user()  # signed in through /auth/token
    assert (await user.get("/api/v1/_tokens")).json() == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": 5},
        {"name": "x" * 201},
        {"name": "x", "expiresIn": 0},
        {"name": "x", "expiresIn": -60},
        {"name": "x", "expiresIn": "3600"},
        {"name": "x", "expiresIn": 1.5},
        {"name": "x", "expiresIn": True},
        {"name": "x", "expiresIn": None},
        {"name": "x", "expiresIn": 10**12},
        {"name": "x", "scope": "all"},
    ],
)
async def test_bad_bodies_are_400_invalid(member, body):
    assert_api_error(await member.post("/api/v1/_tokens", json=body), 400, "INVALID")
    assert (await member.get("/api/v1/_tokens")).json() == []


@pytest.mark.parametrize("content", [b"", b"[]", b"not json"])
async def test_bodies_that_are_not_objects_are_400(member, content):
    response = await member.post(
        "/api/v1/_tokens", content=content, headers={"Content-Type": "application/json"}
    )
    assert_api_error(response, 400, "BAD_REQUEST")
