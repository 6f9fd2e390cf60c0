"""Signing in and being recognised: cookie sessions, access tokens, refused credentials, the
failed-sign-in throttle, and the checks on cookie requests that change state."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import warnings
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
import jwt
import pytest

from app.credentials import CACHE_SECONDS
from tests.e2e.conftest import client_for, create_user, make_settings
from tests.e2e.support import (
    cookie_client,
    fresh_address,
    raw_database,
    running,
    sign_in,
    token_client,
    token_for,
)
from tests.helpers import assert_api_error, unique

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
async def user(app, admin):
    """A user the tests below sign in as without changing their account."""
    shared = await create_user(app, admin, groups=["g1"])
    yield shared
    await shared.client.aclose()


COOKIE = re.compile(
    r"sid=(?P<sid>[A-Za-z0-9_-]{32,}); Path=/; Expires=(?P<expires>[^;]+); HttpOnly; SameSite=Lax"
    r"(?P<secure>; Secure)?"
)
NO_SUCH_ID = "65f0aaaaaaaaaaaaaaaaaaaa"


def assert_unauthorized(response: httpx.Response) -> None:
    body = assert_api_error(response, 401, "UNAUTHORIZED")
    assert body["message"] == "Unauthorized"
    assert body["tags"] == ["error_unauthorized"]


def without_request_id(response: httpx.Response) -> dict:
    body = response.json()
    body.pop("requestId")
    return body


# --- cookie sessions ---------------------------------------------------------------------------


async def test_sign_in_answers_success_and_sets_the_session_cookie(app, user):
    async with client_for(app, address=fresh_address()) as anonymous:
        response = await anonymous.post(
            "/api/v1/auth", json={"login": user.login, "password": user.password}
        )
    assert response.status_code == 200
    assert response.json() == {"success": True, "sucess": True}
    cookie = COOKIE.fullmatch(response.headers["set-cookie"])
    assert cookie, response.headers["set-cookie"]
    assert cookie["secure"] is None  # the request came over plain http
    expires = parsedate_to_datetime(cookie["expires"])
    expected = datetime.now(UTC) + timedelta(seconds=86400)
    assert abs((expires - expected).total_seconds()) < 60


async def test_sign_ins_get_different_random_session_ids(app, user):
    first = await sign_in(app, user.login, user.password)
    second = await sign_in(app, user.login, user.password)
    assert first != second


async def test_cookie_is_secure_when_the_request_came_over_https(app, user):
    transport = httpx.ASGITransport(app=app, client=(fresh_address(), 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as secure:
        response = await secure.post(
            "/api/v1/auth", json={"login": user.login, "password": user.password}
        )
    assert response.status_code == 200
    cookie = COOKIE.fullmatch(response.headers["set-cookie"])
    assert cookie and cookie["secure"] == "; Secure", response.headers["set-cookie"]


async def test_the_cookie_authenticates_and_the_session_lives_in_mongodb(app, user, mongodb_url):
    sid = await sign_in(app, user.login, user.password)
    async with cookie_client(app, sid) as browser:
        me = await browser.get("/api/v1/_me")
    assert me.status_code == 200 and me.json()["id"] == user.id
    async with raw_database(mongodb_url) as db:
        sessions = db["_sessions"]
        indexes = await sessions.index_information()
        # Expired sessions are deleted by app.expiry over this index (not a TTL index).
        assert [("expiresAt", 1)] in [spec["key"] for spec in indexes.values()]
        assert not [spec for spec in indexes.values() if "expireAfterSeconds" in spec]
        # Stored under a hash of the session id, so a database leak is not a login.
        assert await sessions.find_one({"_id": sid}) is None
        record = await sessions.find_one({"_id": hashlib.sha256(sid.encode()).hexdigest()})
        assert record is not None and record["user"] == user.id
        assert record["expiresAt"] - record["createdAt"] == timedelta(seconds=86400)


async def test_sign_out_ends_the_session_on_the_server(app, user):
    sid = await sign_in(app, user.login, user.password)
    kept = await sign_in(app, user.login, user.password)
    async with cookie_client(app, sid, headers={"Content-Type": "application/json"}) as browser:
        assert (await browser.get("/api/v1/_me")).status_code == 200
        response = await browser.delete("/api/v1/auth")
        assert response.status_code == 200
        assert response.json() == {"success": True, "sucess": True}
        assert response.headers["set-cookie"].startswith("sid=; Path=/; Expires=Thu, 01 Jan 1970")
        # The browser could still replay the old cookie: the server must refuse it.
        assert_unauthorized(await browser.get("/api/v1/_me"))
    async with cookie_client(app, kept) as other_tab:
        assert (await other_tab.get("/api/v1/_me")).status_code == 200


async def test_sign_out_with_a_bearer_token_ends_that_token(app, user):
    token = await token_for(app, user.login, user.password)
    async with token_client(app, token) as client:
        assert (await client.delete("/api/v1/auth")).status_code == 200
        assert_unauthorized(await client.get("/api/v1/_me"))
    assert (await user.get("/api/v1/_me")).status_code == 200  # other tokens untouched


# --- access tokens -----------------------------------------------------------------------------


async def test_token_endpoint_issues_an_hs256_jwt(app, user, settings):
    async with client_for(app, address=fresh_address()) as anonymous:
        before = time.time()
        response = await anonymous.post(
            "/api/v1/auth/token", json={"login": user.login, "password": user.password}
        )
        after = time.time()
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "sucess", "type", "token", "issuedAt", "expiresAt"}
    assert body["success"] is True and body["sucess"] is True and body["type"] == "access"
    assert isinstance(body["issuedAt"], int) and isinstance(body["expiresAt"], int)
    assert before * 1000 - 1 <= body["issuedAt"] <= after * 1000 + 1
    assert body["expiresAt"] - body["issuedAt"] == 86400 * 1000

    assert jwt.get_unverified_header(body["token"])["alg"] == "HS256"
    claims = jwt.decode(body["token"], settings.app_secret, algorithms=["HS256"])
    assert claims["sub"] == user.id
    assert re.fullmatch(r"[0-9a-f]{24}", claims["jti"])
    assert claims["iat"] == body["issuedAt"] // 1000
    # The token must not stop working before the expiresAt the answer announces.
    assert body["expiresAt"] <= claims["exp"] * 1000 < body["expiresAt"] + 1000

    async with token_client(app, body["token"]) as client:
        assert (await client.get("/api/v1/_me")).json()["id"] == user.id


async def test_me_describes_the_caller(app, make_user, admin):
    user = await make_user(groups=["sales", "ops"], branches=["north"], name="Ann Example")
    me = (await user.get("/api/v1/_me")).json()
    assert me == {
        "id": user.id,
        "login": user.login,
        "name": "Ann Example",
        "groups": ["sales", "ops"],
        "branches": ["north"],
        "admin": False,
    }
    assert (await admin.get("/api/v1/_me")).json()["admin"] is True


# --- refused credentials -----------------------------------------------------------------------

PROTECTED = [
    ("GET", "/api/v1/_me"),
    ("DELETE", "/api/v1/auth"),
    ("GET", "/api/v1/_users"),
    ("POST", "/api/v1/_users"),
    ("GET", f"/api/v1/_users/{NO_SUCH_ID}"),
    ("PATCH", f"/api/v1/_users/{NO_SUCH_ID}"),
    ("DELETE", f"/api/v1/_users/{NO_SUCH_ID}"),
    ("GET", "/api/v1/_tokens"),
    ("POST", "/api/v1/_tokens"),
    ("DELETE", f"/api/v1/_tokens/{NO_SUCH_ID}"),
    ("GET", "/api/v1/things"),
    ("POST", "/api/v1/things"),
    ("GET", f"/api/v1/things/{NO_SUCH_ID}"),
    ("PATCH", f"/api/v1/things/{NO_SUCH_ID}"),
    ("DELETE", f"/api/v1/things/{NO_SUCH_ID}"),
    ("PUT", f"/api/v1/things/{NO_SUCH_ID}/access"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_every_endpoint_but_healthz_needs_credentials(client, method, path):
    body = {"a": 1} if method in ("POST", "PATCH", "PUT") else None
    assert_unauthorized(await client.request(method, path, json=body))


async def test_healthz_needs_no_credentials(client):
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer ",
        "bearer    ",
        "Basic dXNlcjpwYXNzd29yZA==",
        "Token abc",
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer two words",
        "eyJhbGciOiJIUzI1NiJ9.e30.x",
    ],
)
async def test_malformed_authorization_is_401(client, authorization):
    assert_unauthorized(await client.get("/api/v1/_me", headers={"Authorization": authorization}))


def _claims(user_id: str, **changes: object) -> dict:
    moment = int(time.time())
    return {"sub": user_id, "iat": moment, "exp": moment + 600, "jti": NO_SUCH_ID, **changes}


async def test_forged_and_expired_jwts_are_401(app, client, admin, settings):
    real = await token_for(app, admin.login, admin.password)
    real_claims = jwt.decode(real, settings.app_secret, algorithms=["HS256"])
    moment = int(time.time())
    forged = {
        "other key": jwt.encode(real_claims, "another-secret-0123456789-abcdefgh", "HS256"),
        "alg none": jwt.encode(real_claims, None, algorithm="none"),
        "no jti": jwt.encode(
            {k: v for k, v in real_claims.items() if k != "jti"}, settings.app_secret, "HS256"
        ),
        "unknown jti": jwt.encode(_claims(admin.id), settings.app_secret, "HS256"),
        "other sub": jwt.encode({**real_claims, "sub": NO_SUCH_ID}, settings.app_secret, "HS256"),
        "expired": jwt.encode(
            {**real_claims, "iat": moment - 7200, "exp": moment - 3600},
            settings.app_secret,
            "HS256",
        ),
        "tampered": real[:-3] + ("AAA" if not real.endswith("AAA") else "BBB"),
    }
    with warnings.catch_warnings():  # the test secret is short for SHA-512; that is the point
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        forged["HS512"] = jwt.encode(real_claims, settings.app_secret, "HS512")
    for name, token in forged.items():
        response = await client.get("/api/v1/_me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert_unauthorized(response)
    # The genuine one still works: the refusals above were about the forgeries.
    ok = await client.get("/api/v1/_me", headers={"Authorization": f"Bearer {real}"})
    assert ok.status_code == 200


@pytest.mark.parametrize("cookie", ["sid=", "sid=nonsense", "sid=" + "x" * 43, "sid=" + "y" * 500])
async def test_unknown_session_cookies_are_401(client, cookie):
    assert_unauthorized(await client.get("/api/v1/_me", headers={"Cookie": cookie}))


async def test_sessions_and_tokens_expire_after_their_ttl(app, user, mongodb_url, tmp_path):
    short = make_settings(mongodb_url, tmp_path, SESSION_TTL="1", TOKEN_TTL="1")
    async with running(short) as brief:
        sid = await sign_in(brief, user.login, user.password)
        async with client_for(brief, address=fresh_address()) as anonymous:
            issued = (
                await anonymous.post(
                    "/api/v1/auth/token", json={"login": user.login, "password": user.password}
                )
            ).json()
        assert issued["expiresAt"] - issued["issuedAt"] == 1000
        async with (
            cookie_client(brief, sid) as by_cookie,
            token_client(brief, issued["token"]) as by_token,
        ):
            # Good at first (and now cached by this instance) ...
            assert (await by_cookie.get("/api/v1/_me")).status_code == 200
            assert (await by_token.get("/api/v1/_me")).status_code == 200
            await asyncio.sleep(max(0.0, issued["expiresAt"] / 1000 - time.time()) + 0.3)
            assert CACHE_SECONDS > 1.5  # ... so this checks expiry beats the cache
            # ... then refused by the instance that issued them and by any other.
            assert_unauthorized(await by_cookie.get("/api/v1/_me"))
            assert_unauthorized(await by_token.get("/api/v1/_me"))
    async with cookie_client(app, sid) as by_cookie, token_client(app, issued["token"]) as by_token:
        assert_unauthorized(await by_cookie.get("/api/v1/_me"))
        assert_unauthorized(await by_token.get("/api/v1/_me"))


# --- wrong passwords and the throttle ------------------------------------------------------------


async def test_wrong_password_and_unknown_login_get_the_same_401(app, make_user):
    user = await make_user()
    async with client_for(app, address=fresh_address()) as anonymous:
        for path in ("/api/v1/auth", "/api/v1/auth/token"):
            wrong = await anonymous.post(path, json={"login": user.login, "password": "nope-nope"})
            unknown = await anonymous.post(
                path, json={"login": unique("nobody"), "password": user.password}
            )
            assert_unauthorized(wrong)
            assert_unauthorized(unknown)
            assert without_request_id(wrong) == without_request_id(unknown)
            assert "set-cookie" not in wrong.headers and "set-cookie" not in unknown.headers


async def test_a_disabled_user_cannot_sign_in(app, make_user, admin):
    user = await make_user()
    assert (await admin.patch(f"/api/v1/_users/{user.id}", json={"disabled": True})).is_success
    async with client_for(app, address=fresh_address()) as anonymous:
        response = await anonymous.post(
            "/api/v1/auth", json={"login": user.login, "password": user.password}
        )
    assert_unauthorized(response)


@pytest.mark.parametrize(
    "body", [{}, {"login": "x"}, {"password": "x"}, {"login": 1, "password": "x"}, [1]]
)
async def test_sign_in_without_login_and_password_is_400(client, body):
    assert_api_error(await client.post("/api/v1/auth", json=body), 400, "BAD_REQUEST")


def assert_throttled(response: httpx.Response) -> None:
    assert_api_error(response, 429, "TOO_MANY_REQUESTS")
    assert 1 <= int(response.headers["retry-after"]) <= 300
    assert "set-cookie" not in response.headers


async def test_ten_failures_for_one_login_block_it_even_with_the_right_password(app, make_user):
    user = await make_user()
    for attempt in range(10):
        # A different address each time: only the login ties these attempts together.
        async with client_for(app, address=fresh_address()) as anonymous:
            wrong = await anonymous.post(
                "/api/v1/auth", json={"login": user.login, "password": f"wrong-{attempt}"}
            )
        assert_unauthorized(wrong)
    async with client_for(app, address=fresh_address()) as anonymous:
        right = {"login": user.login, "password": user.password}
        assert_throttled(await anonymous.post("/api/v1/auth", json=right))
        assert_throttled(await anonymous.post("/api/v1/auth/token", json=right))
        # Other logins from this same address are not held back.
        other = await make_user()
        response = await anonymous.post(
            "/api/v1/auth", json={"login": other.login, "password": other.password}
        )
        assert response.status_code == 200
    # Credentials issued before the lockout keep working.
    assert (await user.get("/api/v1/_me")).status_code == 200


async def test_ten_failures_from_one_address_block_it(app, make_user):
    user = await make_user()
    address = fresh_address()
    async with client_for(app, address=address) as attacker:
        for _ in range(9):
            assert_unauthorized(
                await attacker.post(
                    "/api/v1/auth/token", json={"login": unique("guess"), "password": "password1"}
                )
            )
        # Nine failures are not yet enough: the right password still gets in.
        right = {"login": user.login, "password": user.password}
        assert (await attacker.post("/api/v1/auth", json=right)).status_code == 200
        assert_unauthorized(
            await attacker.post("/api/v1/auth", json={"login": unique("guess"), "password": "x"})
        )
        assert_throttled(await attacker.post("/api/v1/auth", json=right))
        assert_throttled(await attacker.post("/api/v1/auth/token", json=right))
    async with client_for(app, address=fresh_address()) as elsewhere:
        assert (await elsewhere.post("/api/v1/auth", json=right)).status_code == 200


async def test_only_failures_of_the_last_five_minutes_count(app, make_user, mongodb_url):
    user = await make_user()
    right = {"login": user.login, "password": user.password}
    moment = datetime.now(UTC)

    async def failed_at(minutes_ago: float) -> None:
        # Recorded the way the server records a failed sign-in for this login.
        failure = {"key": f"login:{user.login}", "at": moment - timedelta(minutes=minutes_ago)}
        await failures.insert_many([dict(failure) for _ in range(10)])

    async with raw_database(mongodb_url) as db, client_for(app, address=fresh_address()) as c:
        failures = db["_login_failures"]
        await failed_at(6)
        assert (await c.post("/api/v1/auth", json=right)).status_code == 200
        await failed_at(4)
        response = await c.post("/api/v1/auth", json=right)
        assert_throttled(response)
        # Free again when the oldest of those ten leaves the window, a minute from now.
        assert 50 <= int(response.headers["retry-after"]) <= 62


# --- cookie requests that change state ---------------------------------------------------------


async def test_cookie_writes_must_be_json(app, user, store):
    sid = await sign_in(app, user.login, user.password)
    async with cookie_client(app, sid) as browser:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            response = await browser.post(f"/api/v1/{store}", content=b'{"a": 1}', headers=headers)
            assert_api_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
        assert_api_error(await browser.delete("/api/v1/auth"), 415, "UNSUPPORTED_MEDIA_TYPE")
        assert (await browser.get(f"/api/v1/{store}")).json() == []
        created = await browser.post(f"/api/v1/{store}", json={"a": 1})
        assert created.status_code == 201


async def test_cookie_writes_from_a_foreign_origin_are_403(app, user, store):
    sid = await sign_in(app, user.login, user.password)
    async with cookie_client(app, sid) as browser:
        for origin in ("https://evil.example", "null", "http://testserver.evil.example"):
            response = await browser.post(
                f"/api/v1/{store}", json={"a": 1}, headers={"Origin": origin}
            )
            assert_api_error(response, 403, "FORBIDDEN")
        own = await browser.post(
            f"/api/v1/{store}", json={"a": 2}, headers={"Origin": "http://testserver"}
        )
        assert own.status_code == 201
        # Reading is not a state change: a foreign origin may ask (CORS decides what it sees).
        listed = await browser.get(f"/api/v1/{store}", headers={"Origin": "https://evil.example"})
        assert [entity["a"] for entity in listed.json()] == [2]


async def test_cookie_writes_from_a_cors_origin_are_accepted(user, store, mongodb_url, tmp_path):
    configured = make_settings(mongodb_url, tmp_path, CORS_ORIGINS="https://app.example")
    async with running(configured) as other:
        sid = await sign_in(other, user.login, user.password)
        async with cookie_client(other, sid) as browser:
            response = await browser.post(
                f"/api/v1/{store}", json={"a": 1}, headers={"Origin": "https://app.example"}
            )
            assert response.status_code == 201, response.text
            refused = await browser.post(
                f"/api/v1/{store}", json={"a": 1}, headers={"Origin": "https://evil.example"}
            )
            assert_api_error(refused, 403, "FORBIDDEN")


async def test_bearer_writes_are_not_held_to_the_cookie_rules(user, store):
    response = await user.post(
        f"/api/v1/{store}",
        content=b'{"a": 1}',
        headers={"Content-Type": "text/plain", "Origin": "https://evil.example"},
    )
    assert response.status_code == 201, response.text


async def test_bad_cookie_with_a_good_bearer_token_is_fine(app, user):
    token = await token_for(app, user.login, user.password)
    async with client_for(
        app, headers={"Authorization": f"Bearer {token}", "Cookie": "sid=nonsense"}
    ) as client:
        assert (await client.get("/api/v1/_me")).status_code == 200
