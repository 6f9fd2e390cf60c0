"""User administration: admins only, hashed passwords never shown, changes that end or
narrow a user's access, the last admin kept, and the first admin of an empty database."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.e2e.conftest import ADMIN_PASSWORD, client_for, create_user, make_settings
from tests.e2e.support import (
    answers,
    cookie_client,
    fresh_address,
    raw_database,
    running,
    seconds_until,
    sign_in,
    token_client,
    token_for,
)
from tests.helpers import assert_api_error, unique

pytestmark = pytest.mark.asyncio

NO_SUCH_ID = "65f0aaaaaaaaaaaaaaaaaaaa"
RENDERED = {"id", "login", "name", "groups", "branches", "admin", "disabled"}
RENDERED |= {"createdAt", "updatedAt"}


@pytest.fixture(scope="module")
async def member(app, admin):
    """A plain user for the tests that change nothing about them."""
    user = await create_user(app, admin, groups=["a"])
    yield user
    await user.client.aclose()


async def can_sign_in(app, login: str, password: str) -> int:
    async with client_for(app, address=fresh_address()) as anonymous:
        response = await anonymous.post("/api/v1/auth", json={"login": login, "password": password})
    return response.status_code


def assert_no_secrets(text: str) -> None:
    assert "password" not in text.lower()
    assert "$argon2" not in text


# --- admins only -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/_users"),
        ("POST", "/api/v1/_users"),
        ("GET", "/api/v1/_users/{id}"),
        ("PATCH", "/api/v1/_users/{id}"),
        ("DELETE", "/api/v1/_users/{id}"),
    ],
)
async def test_non_admins_are_403(member, method, path):
    body = {"login": unique("x"), "password": "long-enough-1", "admin": True}
    response = await member.client.request(
        method,
        path.format(id=member.id),
        json=body if method in ("POST", "PATCH") else None,
    )
    error = assert_api_error(response, 403, "FORBIDDEN")
    assert error["tags"] == ["error_credentials", "error_forbidden"]
    assert (await member.get("/api/v1/_me")).json()["admin"] is False


# --- creating and reading ----------------------------------------------------------------------


async def test_create_returns_the_user_without_any_password(admin, mongodb_url):
    login = unique("ann")
    body = {
        "login": login,
        "password": "s3cret-password",
        "name": "Ann",
        "groups": ["sales"],
        "branches": ["north"],
    }
    response = await admin.post("/api/v1/_users", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == RENDERED
    assert response.headers["location"] == f"/api/v1/_users/{created['id']}"
    assert (created["login"], created["name"]) == (login, "Ann")
    assert (created["groups"], created["branches"]) == (["sales"], ["north"])
    assert created["admin"] is False and created["disabled"] is False
    assert_no_secrets(response.text)

    fetched = await admin.get(f"/api/v1/_users/{created['id']}")
    assert fetched.status_code == 200 and fetched.json() == created
    assert_no_secrets(fetched.text)
    listed = await admin.get("/api/v1/_users")
    assert created in listed.json()
    assert_no_secrets(listed.text)

    async with raw_database(mongodb_url) as db:
        stored = await db["_users"].find_one({"login": login})
    assert stored["passwordHash"].startswith("$argon2id$")
    assert "s3cret-password" not in str(stored)


async def test_an_admin_can_be_created(app, admin):
    login = unique("boss")
    body = {"login": login, "password": "long-enough-1", "admin": True}
    assert (await admin.post("/api/v1/_users", json=body)).json()["admin"] is True
    async with token_client(app, await token_for(app, login, "long-enough-1")) as boss:
        assert (await boss.get("/api/v1/_users")).status_code == 200


async def test_duplicate_login_is_409(admin):
    login = unique("dup")
    body = {"login": login, "password": "long-enough-1"}
    assert (await admin.post("/api/v1/_users", json=body)).status_code == 201
    again = await admin.post("/api/v1/_users", json={**body, "name": "Other"})
    assert login in assert_api_error(again, 409, "CONFLICT")["message"]
    named = [user for user in (await admin.get("/api/v1/_users")).json() if user["login"] == login]
    assert len(named) == 1 and named[0]["name"] == ""


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "1234567"}, "password"),
        ({"password": ""}, "password"),
        ({"password": 12345678}, "password"),
        ({"password": None}, "password"),
        ({"login": None}, "login"),
        ({"login": ""}, "login"),
        ({"login": "has space"}, "login"),
        ({"login": "-leading"}, "login"),
        ({"groups": "sales"}, "groups"),
        ({"groups": [1]}, "groups"),
        ({"branches": [""]}, "branches"),
        ({"admin": "yes"}, "admin"),
        ({"name": 5}, "name"),
        ({"disabled": True}, "disabled"),
        ({"passwordHash": "$argon2id$x"}, "passwordHash"),
    ],
)
async def test_bad_new_users_are_400(admin, body, field):
    login = unique("bad")
    full = {"login": login, "password": "long-enough-1", **body}
    error = assert_api_error(await admin.post("/api/v1/_users", json=full), 400, "INVALID")
    assert field in error["message"]
    logins = [user["login"] for user in (await admin.get("/api/v1/_users")).json()]
    assert login not in logins


@pytest.mark.parametrize("missing", ["login", "password"])
async def test_login_and_password_are_required(admin, missing):
    body = {"login": unique("req"), "password": "long-enough-1"}
    del body[missing]
    error = assert_api_error(await admin.post("/api/v1/_users", json=body), 400, "INVALID")
    assert missing in error["message"]


async def test_eight_characters_is_long_enough(app, admin):
    login = unique("eight")
    body = {"login": login, "password": "12345678"}
    assert (await admin.post("/api/v1/_users", json=body)).status_code == 201
    assert await can_sign_in(app, login, "12345678") == 200


@pytest.mark.parametrize("user_id", [NO_SUCH_ID, "nope", "65F0AAAAAAAAAAAAAAAAAAAZ"])
async def test_unknown_users_are_404(admin, user_id):
    path = f"/api/v1/_users/{user_id}"
    assert_api_error(await admin.get(path), 404, "NOT_FOUND")
    assert_api_error(await admin.patch(path, json={"name": "x"}), 404, "NOT_FOUND")
    assert_api_error(await admin.delete(path), 404, "NOT_FOUND")


# --- changing users ----------------------------------------------------------------------------


async def test_patch_sets_the_given_fields_only(admin, make_user):
    user = await make_user(groups=["a"], branches=["b"])
    path = f"/api/v1/_users/{user.id}"
    before = (await admin.get(path)).json()
    response = await admin.patch(path, json={"name": "Renamed", "groups": ["x", "y"]})
    assert response.status_code == 200, response.text
    after = response.json()
    assert after["name"] == "Renamed" and after["groups"] == ["x", "y"]
    assert after["branches"] == ["b"] and after["login"] == before["login"]
    assert after["createdAt"] == before["createdAt"]
    assert_no_secrets(response.text)
    assert (await admin.get(path)).json() == after
    patched = await admin.patch(path, json={"branches": [], "admin": True})
    assert (patched.json()["branches"], patched.json()["admin"]) == ([], True)


@pytest.mark.parametrize(
    "body",
    [{"login": "renamed"}, {"password": "short"}, {"disabled": "yes"}, {"groups": None}, {}],
)
async def test_bad_patches_are_400_and_change_nothing(admin, member, body):
    before = (await admin.get(f"/api/v1/_users/{member.id}")).json()
    response = await admin.patch(f"/api/v1/_users/{member.id}", json=body)
    if body:
        assert_api_error(response, 400, "INVALID")
        assert (await admin.get(f"/api/v1/_users/{member.id}")).json() == before
    else:  # an empty patch is a no-op
        assert response.status_code == 200
    assert (await member.get("/api/v1/_me")).status_code == 200


async def test_changing_the_password_ends_sessions_and_tokens_at_once(app, admin, make_user):
    user = await make_user()
    sid = await sign_in(app, user.login, user.password)
    async with cookie_client(app, sid) as browser:
        assert await answers(browser, 200) and await answers(user.client, 200)
        patched = await admin.patch(
            f"/api/v1/_users/{user.id}", json={"password": "brand-new-password"}
        )
        assert patched.status_code == 200
        assert_no_secrets(patched.text)
        assert_api_error(await browser.get("/api/v1/_me"), 401, "UNAUTHORIZED")
        assert_api_error(await user.get("/api/v1/_me"), 401, "UNAUTHORIZED")
    assert await can_sign_in(app, user.login, user.password) == 401
    assert await can_sign_in(app, user.login, "brand-new-password") == 200


async def test_disabling_ends_access_at_once_and_enabling_restores_sign_in(app, admin, make_user):
    user = await make_user()
    personal = (await user.post("/api/v1/_tokens", json={"name": "api"})).json()
    sid = await sign_in(app, user.login, user.password)
    async with cookie_client(app, sid) as browser, token_client(app, personal["token"]) as api:
        assert await answers(browser, 200) and await answers(api, 200)
        patched = await admin.patch(f"/api/v1/_users/{user.id}", json={"disabled": True})
        assert patched.status_code == 200 and patched.json()["disabled"] is True
        for client in (browser, api, user.client):
            assert_api_error(await client.get("/api/v1/_me"), 401, "UNAUTHORIZED")
        assert await can_sign_in(app, user.login, user.password) == 401

        enabled = await admin.patch(f"/api/v1/_users/{user.id}", json={"disabled": False})
        assert enabled.json()["disabled"] is False
        assert await can_sign_in(app, user.login, user.password) == 200
        # Credentials ended by disabling stay ended.
        assert await answers(browser, 401) and await answers(api, 401)


async def test_deleting_a_user_ends_their_access(app, admin, make_user):
    user = await make_user()
    assert await answers(user.client, 200)
    response = await admin.delete(f"/api/v1/_users/{user.id}")
    assert response.status_code == 200 and response.json() == {"success": True, "sucess": True}
    assert_api_error(await user.get("/api/v1/_me"), 401, "UNAUTHORIZED")
    assert_api_error(await admin.get(f"/api/v1/_users/{user.id}"), 404, "NOT_FOUND")
    assert await can_sign_in(app, user.login, user.password) == 401


async def test_ending_access_reaches_other_instances_within_five_seconds(
    admin, make_user, mongodb_url, tmp_path
):
    users = await asyncio.gather(make_user(), make_user(), make_user())
    endings = [
        lambda user: admin.patch(f"/api/v1/_users/{user.id}", json={"disabled": True}),
        lambda user: admin.patch(f"/api/v1/_users/{user.id}", json={"password": "changed-pw-1"}),
        lambda user: admin.delete(f"/api/v1/_users/{user.id}"),
    ]

    async def ended_on(other, user, end) -> float:
        sid = await sign_in(other, user.login, user.password)
        async with (
            cookie_client(other, sid) as browser,
            client_for(
                other, headers={"Authorization": user.client.headers["authorization"]}
            ) as api,
        ):
            assert await answers(browser, 200) and await answers(api, 200)  # cached there now
            assert (await end(user)).status_code == 200
            return max(
                await asyncio.gather(
                    seconds_until(lambda: answers(browser, 401), limit=5.0),
                    seconds_until(lambda: answers(api, 401), limit=5.0),
                )
            )

    async with running(make_settings(mongodb_url, tmp_path)) as other:
        # The three run side by side; each waits out the other instance's cache.
        took = await asyncio.gather(
            *(ended_on(other, *pair) for pair in zip(users, endings, strict=True))
        )
    assert max(took) < 5.0, took


async def test_group_changes_take_effect_within_five_seconds(admin, make_user, store):
    writer, leaving, joining = await asyncio.gather(
        make_user(groups=["team"]), make_user(groups=["team"]), make_user(groups=["elsewhere"])
    )
    made = (await writer.post(f"/api/v1/{store}", json={"a": 1})).json()
    path = f"/api/v1/{store}/{made['_id']}"
    assert await answers(leaving.client, 200, path)
    assert await answers(joining.client, 404, path)

    await admin.patch(f"/api/v1/_users/{leaving.id}", json={"groups": ["elsewhere"]})
    await admin.patch(f"/api/v1/_users/{joining.id}", json={"groups": ["elsewhere", "team"]})
    took = await asyncio.gather(
        seconds_until(lambda: answers(leaving.client, 404, path), limit=5.0),
        seconds_until(lambda: answers(joining.client, 200, path), limit=5.0),
    )
    assert max(took) < 5.0, took
    assert (await leaving.get(f"/api/v1/{store}")).json() == []
    assert [entity["_id"] for entity in (await joining.get(f"/api/v1/{store}")).json()] == [
        made["_id"]
    ]
    assert (await leaving.get("/api/v1/_me")).json()["groups"] == ["elsewhere"]


# --- the admins that must remain ---------------------------------------------------------------


async def test_the_last_active_admin_cannot_be_removed(mongodb_url, tmp_path):
    isolated = make_settings(mongodb_url, tmp_path, MONGODB_DB=unique("lastadmin"))
    async with running(isolated) as app:
        first = token_client(app, await token_for(app, "admin", ADMIN_PASSWORD))
        async with first:
            me = (await first.get("/api/v1/_me")).json()
            path = f"/api/v1/_users/{me['id']}"
            for change in ({"disabled": True}, {"admin": False}, {"admin": False, "name": "x"}):
                assert_api_error(await first.patch(path, json=change), 409, "CONFLICT")
            assert_api_error(await first.delete(path), 409, "CONFLICT")
            # A disabled admin is no stand-in.
            body = {"login": "second", "password": "second-password", "admin": True}
            second = (await first.post("/api/v1/_users", json=body)).json()
            await first.patch(f"/api/v1/_users/{second['id']}", json={"disabled": True})
            assert_api_error(await first.patch(path, json={"admin": False}), 409, "CONFLICT")
            still = (await first.get(path)).json()
            assert still["admin"] is True and still["disabled"] is False

            # With another active admin, the first may step down.
            await first.patch(f"/api/v1/_users/{second['id']}", json={"disabled": False})
            demoted = await first.patch(path, json={"admin": False})
            assert demoted.status_code == 200 and demoted.json()["admin"] is False

        async with token_client(app, await token_for(app, "second", "second-password")) as new:
            own = f"/api/v1/_users/{second['id']}"
            assert_api_error(await new.delete(own), 409, "CONFLICT")
            assert_api_error(await new.patch(own, json={"disabled": True}), 409, "CONFLICT")
            assert (await new.delete(path)).status_code == 200  # the former admin may go


async def test_an_empty_database_gets_an_admin_with_a_printed_password(
    mongodb_url, tmp_path, capsys
):
    fresh = make_settings(
        mongodb_url, tmp_path, MONGODB_DB=unique("bootstrap"), APP_ADMIN_PASSWORD=""
    )
    async with running(fresh) as app:
        printed = capsys.readouterr()
        found = re.findall(r"password: (\S+)", printed.out)
        assert len(found) == 1, printed
        password = found[0]
        assert len(password) >= 16
        assert await can_sign_in(app, "admin", password) == 200
        async with token_client(app, await token_for(app, "admin", password)) as root:
            users = (await root.get("/api/v1/_users")).json()
        assert [(user["login"], user["admin"]) for user in users] == [("admin", True)]
    async with raw_database(mongodb_url, fresh.mongodb_db) as db:
        stored = await db["_users"].find_one({"login": "admin"})
    assert stored["passwordHash"].startswith("$argon2id$")

    async with running(fresh) as again:
        assert await can_sign_in(again, "admin", password) == 200
    printed = capsys.readouterr()
    assert password not in printed.out + printed.err
    assert "password" not in printed.out.lower()


async def test_the_first_admin_takes_login_and_password_from_settings(
    mongodb_url, tmp_path, capsys
):
    fresh = make_settings(
        mongodb_url,
        tmp_path,
        MONGODB_DB=unique("bootstrap"),
        APP_ADMIN_LOGIN="root",
        APP_ADMIN_PASSWORD="configured-password",
    )
    async with running(fresh) as app:
        assert await can_sign_in(app, "root", "configured-password") == 200
        assert await can_sign_in(app, "admin", "configured-password") == 401
    printed = capsys.readouterr()
    assert "configured-password" not in printed.out + printed.err
