"""The audit log: sign-ins, tokens, users, definitions, access changes and deletes."""

from __future__ import annotations

import pytest

from tests.e2e.live import ADMIN_PASSWORD
from tests.e2e.support import fresh_address
from tests.helpers import assert_api_error, next_link

pytestmark = pytest.mark.asyncio


async def test_what_is_recorded_and_who_reads_it(app, admin, make_user, store):
    from tests.e2e.conftest import client_for

    user = await make_user()
    async with client_for(app, address=fresh_address()) as anonymous:
        await anonymous.post("/api/v1/auth", json={"login": user.login, "password": "wrong-one-1"})
        await anonymous.post("/api/v1/auth", json={"login": user.login, "password": user.password})
    token = (await user.post("/api/v1/_tokens", json={"name": "erp"})).json()
    await user.delete(f"/api/v1/_tokens/{token['id']}")
    await admin.patch(
        f"/api/v1/_users/{user.id}", json={"groups": ["g"], "password": "new-password-9"}
    )
    await admin.put(f"/api/v1/_stores/{store}", json={"schema": {"type": "object"}})
    made = (await admin.post(f"/api/v1/{store}", json={"a": 1})).json()
    await admin.put(f"/api/v1/{store}/{made['_id']}/access", json={"access": ["*"]})
    await admin.delete(f"/api/v1/{store}/{made['_id']}")

    mine = (await admin.get("/api/v1/_audit", params={"user": user.id})).json()
    actions = [e["action"] for e in mine]
    assert actions[:3] == ["token-revoked", "token-created", "signin"]
    assert mine[2]["kind"] == "session"
    failed = (await admin.get("/api/v1/_audit", params={"limit": "1000"})).json()
    assert any(e["action"] == "signin-failed" and e["login"] == user.login for e in failed)
    changed = next(e for e in failed if e["action"] == "user-changed" and e["target"] == user.id)
    assert changed["fields"] == ["groups", "password"] and "new-password-9" not in str(failed)
    about_store = (await admin.get("/api/v1/_audit", params={"store": store})).json()
    assert [e["action"] for e in about_store] == [
        "entity-deleted", "access-changed", "definition-changed",
    ]  # fmt: skip
    assert about_store[1]["changes"] == {"access": ["*"]} and about_store[0]["user"] == admin.id
    other = await make_user()  # (the password change ended the first user's credentials)
    assert_api_error(await other.get("/api/v1/_audit"), 403, "FORBIDDEN")


async def test_audit_pages_newest_first(admin):
    for _ in range(3):
        await admin.post("/api/v1/_tokens", json={"name": "paging"})
    first = await admin.get("/api/v1/_audit", params={"limit": "2"})
    link = next_link(first)
    assert link is not None and len(first.json()) == 2
    second = (await admin.get(link)).json()
    ids = [e["id"] for e in first.json() + second]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    assert_api_error(await admin.get("/api/v1/_audit", params={"limit": "0"}), 400, "INVALID")
    assert_api_error(await admin.get("/api/v1/_audit", params={"before": "x"}), 400, "INVALID")
    assert ADMIN_PASSWORD not in str(first.json())
