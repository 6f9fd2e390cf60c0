"""The administration console in a real browser (Debian's chromium through Playwright),
against a live server on the test database; elements are found by role, label and text."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.e2e.browser import browser_page
from tests.e2e.live import ADMIN_PASSWORD
from tests.helpers import unique

pytestmark = pytest.mark.asyncio
# The README's screenshots are refreshed with UPDATE_SCREENSHOTS=1 (when the UI changes);
# other runs still take them, into a scratch folder.
SHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS")
    else Path(tempfile.gettempdir()) / "console-screenshots"
)


async def sign_in(page, url: str, login: str, password: str) -> None:
    await page.goto(f"{url}/admin")
    await page.get_by_label("Login").fill(login)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("navigation", name="Sections").wait_for()


async def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_sign_in_browse_and_open_an_entity(live, admin, store):
    made = []
    for n in range(60):
        body = {"title": f"Deal {n}", "stage": "won" if n % 3 == 0 else "new", "amount": n * 10}
        made.append((await admin.post(f"/api/v1/{store}", json=body)).json())
    async with browser_page() as page:
        await page.goto(f"{live.url}/admin")
        await page.get_by_label("Login").fill("admin")
        await page.get_by_label("Password").fill("wrong-password")
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("alert").filter(has_text="Wrong login or password").wait_for()
        await page.get_by_label("Password").fill(ADMIN_PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("link", name=store).click()
        table = page.get_by_role("table", name=f"Entities of {store}")
        await table.get_by_text("Deal 0", exact=True).wait_for()
        assert await table.get_by_role("row").count() == 51  # header + a page of 50
        await page.get_by_role("button", name="Next page").click()
        await table.get_by_text("Deal 50", exact=True).wait_for()
        await page.get_by_role("button", name="Previous page").click()
        await table.get_by_text("Deal 0", exact=True).wait_for()
        await shot(page, "editing")
        await table.get_by_text("Deal 1", exact=True).click()
        corner = page.get_by_label("Selected entity")
        await corner.get_by_text(made[1]["_id"]).wait_for()
        await corner.get_by_role("link").click()
        await page.wait_for_url(f"**/admin/stores/{store}/{made[1]['_id']}")
        fields = page.get_by_label("Fields")
        for name in (
            "title",
            "stage",
            "amount",
            "owner",
            "group",
            "access",
            "branch",
            "createdAt",
            "updatedAt",
        ):
            await fields.get_by_text(name, exact=True).wait_for()
        await fields.get_by_text("Deal 1", exact=True).wait_for()
        await shot(page, "entity")


async def open_entity(page, url: str, store: str, entity_id: str) -> None:
    await page.goto(f"{url}/admin/stores/{store}/{entity_id}")
    await page.get_by_label("Fields").wait_for()


async def test_code_edits_reach_rest_and_errors_show_at_their_field(live, admin, store):
    definition = {
        "schema": {"type": "object", "properties": {"amount": {"type": "number", "minimum": 0}}}
    }
    assert (await admin.put(f"/api/v1/_stores/{store}", json=definition)).status_code == 200
    made = (await admin.post(f"/api/v1/{store}", json={"title": "Edit me", "amount": 5})).json()
    async with browser_page() as page:
        await sign_in(page, live.url, "admin", ADMIN_PASSWORD)
        await open_entity(page, live.url, store, made["_id"])
        editor = page.get_by_label("Entity JSON")
        edited = json.loads(await editor.input_value())
        edited["title"] = "Edited in the console"
        await editor.fill(json.dumps(edited, indent=2))
        await editor.press("Control+s")
        await page.get_by_role("status").filter(has_text="Saved.").wait_for()
        stored = (await admin.get(f"/api/v1/{store}/{made['_id']}")).json()
        assert stored["title"] == "Edited in the console" and stored["amount"] == 5
        edited["amount"] = -1
        await editor.fill(json.dumps(edited))
        await page.get_by_role("button", name="Save", exact=True).click()
        alert = page.get_by_role("alert")
        await alert.get_by_text("amount", exact=True).wait_for()
        assert "minimum" in await alert.inner_text()
        # ... and next to the field itself in the entity's fields.
        marked = page.get_by_label("Fields").get_by_label("Error in amount")
        assert "less than the minimum" in await marked.inner_text()
        await shot(page, "validation-error")
        assert (await admin.get(f"/api/v1/{store}/{made['_id']}")).json()["amount"] == 5
        await page.get_by_role("button", name="Delete entity").click()
        confirm = page.get_by_role("alertdialog", name="Confirm delete")
        await confirm.get_by_role("button", name="Cancel").click()
        assert (await admin.get(f"/api/v1/{store}/{made['_id']}")).status_code == 200
        await page.get_by_role("button", name="Delete entity").click()
        await confirm.get_by_role("button", name="Yes, delete").click()
        await page.wait_for_url(f"**/admin/stores/{store}")
        assert (await admin.get(f"/api/v1/{store}/{made['_id']}")).status_code == 404


async def test_access_change_and_explain(live, admin, make_user, store):
    reader = await make_user()
    made = (await admin.post(f"/api/v1/{store}", json={"title": "Guarded"})).json()
    async with browser_page() as page:
        await sign_in(page, live.url, "admin", ADMIN_PASSWORD)
        await open_entity(page, live.url, store, made["_id"])
        await page.get_by_role("tab", name="Access").click()
        await page.get_by_label("User to explain").select_option(reader.id)
        await page.get_by_role("button", name="Explain").click()
        explanation = page.get_by_label("Explanation")
        await explanation.get_by_text("Read: no").wait_for()
        await page.get_by_label("Access (users, groups or *)").fill(reader.id)
        await page.get_by_role("button", name="Save access").click()
        await page.get_by_role("status").filter(has_text="Access saved.").wait_for()
        assert (await reader.get(f"/api/v1/{store}/{made['_id']}")).status_code == 200
        await page.get_by_role("button", name="Explain").click()
        await explanation.get_by_text("Read: yes (through access)").wait_for()
        await explanation.get_by_text("Write: no").wait_for()
        await shot(page, "access")


async def test_live_updates_reach_an_open_table_and_entity_page(live, admin, store):
    first = (await admin.post(f"/api/v1/{store}", json={"title": "First"})).json()
    async with browser_page() as page:
        await sign_in(page, live.url, "admin", ADMIN_PASSWORD)
        await page.goto(f"{live.url}/admin/stores/{store}")
        table = page.get_by_role("table", name=f"Entities of {store}")
        await table.get_by_text("First", exact=True).wait_for()
        await page.get_by_text("live", exact=True).wait_for()
        made = (await admin.post(f"/api/v1/{store}", json={"title": "Created outside"})).json()
        await table.get_by_text("Created outside").wait_for(timeout=1000)
        await admin.patch(f"/api/v1/{store}/{made['_id']}", json={"title": "Changed outside"})
        await table.get_by_text("Changed outside").wait_for(timeout=1000)
        await admin.delete(f"/api/v1/{store}/{made['_id']}")
        await table.get_by_text("Changed outside").wait_for(state="detached", timeout=1000)

        await open_entity(page, live.url, store, first["_id"])
        await page.get_by_text("live", exact=True).wait_for()
        await admin.patch(f"/api/v1/{store}/{first['_id']}", json={"title": "Renamed outside"})
        await page.get_by_label("Fields").get_by_text("Renamed outside").wait_for(timeout=1000)
        await admin.delete(f"/api/v1/{store}/{first['_id']}")
        await page.get_by_role("alert").filter(has_text="deleted elsewhere").wait_for(timeout=1000)


async def test_tokens_are_created_copied_and_revoked(live, make_user):
    user = await make_user()
    async with browser_page(permissions=["clipboard-read", "clipboard-write"]) as page:
        await sign_in(page, live.url, user.login, user.password)
        await page.get_by_role("link", name="Tokens").click()
        await page.get_by_label("Token name").fill("ERP sync")
        await page.get_by_role("button", name="Create token").click()
        secret = await page.get_by_label("New token secret").input_value()
        await page.get_by_role("button", name="Copy token").click()
        await page.get_by_role("status").filter(has_text="Copied").wait_for()
        assert await page.evaluate("navigator.clipboard.readText()") == secret
        async with httpx.AsyncClient(base_url=live.url) as http:
            headers = {"Authorization": f"Bearer {secret}"}
            assert (await http.get("/api/v1/_me", headers=headers)).status_code == 200
            table = page.get_by_role("table", name="Tokens")
            await table.get_by_role("cell", name="ERP sync", exact=True).wait_for()
            await shot(page, "tokens")
            await page.get_by_role("button", name="Revoke ERP sync").click()
            await page.get_by_text("No personal tokens yet").wait_for()
            assert (await http.get("/api/v1/_me", headers=headers)).status_code == 401


async def test_a_non_admin_sees_only_what_they_may_read(live, admin, make_user, store):
    user = await make_user(groups=["sales"])
    await admin.post(f"/api/v1/{store}", json={"title": "Sales deal", "group": "sales"})
    await admin.post(f"/api/v1/{store}", json={"title": "Board secret"})
    async with browser_page() as page:
        await sign_in(page, live.url, user.login, user.password)
        sections = page.get_by_role("navigation", name="Sections")
        assert await sections.get_by_role("link", name="Users").count() == 0
        assert await sections.get_by_role("link", name="Stores").count() == 0
        await page.goto(f"{live.url}/admin/stores/{store}")
        table = page.get_by_role("table", name=f"Entities of {store}")
        await table.get_by_text("Sales deal").wait_for()
        assert await table.get_by_text("Board secret").count() == 0
        await page.goto(f"{live.url}/admin/users")  # an admin section by URL: not shown
        assert await page.get_by_role("table", name="Users").count() == 0


XSS = [
    "<script>window.__xss = 1</script>",
    '<img src="x" onerror="window.__xss = 2">',
    "javascript:window.__xss = 3",
    '"><svg onload="window.__xss = 4">',
]


async def test_hostile_values_stay_text(live, admin, store):
    body = {f"f{n}": value for n, value in enumerate(XSS)}
    body["<b onmouseover=alert(5)>name</b>"] = XSS[1]
    response = await admin.post(f"/api/v1/{store}", json=body)
    assert response.status_code == 201, response.text
    made = response.json()
    async with browser_page() as page:
        await sign_in(page, live.url, "admin", ADMIN_PASSWORD)
        await page.goto(f"{live.url}/admin/stores/{store}")
        table = page.get_by_role("table", name=f"Entities of {store}")
        await table.get_by_text(XSS[0]).wait_for()
        await open_entity(page, live.url, store, made["_id"])
        for value in XSS:
            await page.get_by_label("Fields").get_by_text(value, exact=True).first.wait_for()
        await page.mouse.move(300, 300)
        await asyncio.sleep(0.3)
        assert await page.evaluate("window.__xss") is None
        assert await page.locator("script:not([src])").count() == 0
        assert await page.locator("img, svg, b").count() == 0


async def test_dark_mode_follows_the_system_and_toggles(live):
    async with browser_page(color_scheme="dark") as page:
        await page.goto(f"{live.url}/admin")
        await page.get_by_label("Login").fill("admin")
        await page.get_by_label("Password").fill(ADMIN_PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("navigation", name="Sections").wait_for()
        background = "getComputedStyle(document.body).backgroundColor"
        assert await page.evaluate(background) == "rgb(21, 23, 26)"
        await shot(page, "dark")
        await page.get_by_role("button", name="Toggle dark mode").click()
        assert await page.evaluate(background) == "rgb(247, 247, 245)"


async def test_keyboard_moves_through_rows_and_opens_them(live, admin, store):
    made = [(await admin.post(f"/api/v1/{store}", json={"n": n})).json() for n in range(3)]
    async with browser_page() as page:
        await sign_in(page, live.url, "admin", ADMIN_PASSWORD)
        await page.goto(f"{live.url}/admin/stores/{store}")
        await (
            page.get_by_role("table", name=f"Entities of {store}")
            .get_by_text(made[2]["_id"])
            .wait_for()
        )
        await page.keyboard.press("/")
        assert await page.evaluate("document.activeElement.name") == "where"
        await page.keyboard.type('{"n": {"_gte": 1}}')
        await page.keyboard.press("Enter")
        await page.get_by_role("table").get_by_text(made[0]["_id"]).wait_for(state="detached")
        await page.keyboard.press("Escape")
        await page.keyboard.press("j")
        await page.keyboard.press("j")
        await page.keyboard.press("k")
        corner = page.get_by_label("Selected entity")
        await corner.get_by_text(made[1]["_id"]).wait_for()
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"**/admin/stores/{store}/{made[1]['_id']}")


async def test_definitions_are_edited_with_a_dry_run(live, admin, store):
    await admin.post(f"/api/v1/{store}", json={"title": "no amount"})
    async with browser_page() as page:
        await sign_in(page, live.url, "admin", ADMIN_PASSWORD)
        await page.get_by_role("link", name="Stores", exact=True).click()
        await page.get_by_label("New store name").fill(store)
        await page.get_by_role("button", name="Define").click()
        await page.get_by_role("button", name="Add field").click()
        await page.get_by_label("Field name").last.fill("amount")
        await page.get_by_label("Field type").last.select_option("number")
        await page.get_by_label("Required").last.check()
        await page.get_by_role("button", name="Dry run").click()
        await (
            page.get_by_role("status")
            .filter(has_text="1 of 1 stored entities would be rejected")
            .wait_for()
        )
        await page.get_by_role("button", name="Save definition").click()
        await page.get_by_role("status").filter(has_text="Saved as version 1").wait_for()
        await shot(page, "stores")
    stored = (await admin.get(f"/api/v1/_stores/{store}")).json()
    assert stored["schema"]["required"] == ["amount"]
    assert stored["schema"]["properties"]["amount"]["type"] == "number"


async def test_console_pages_are_served_with_a_strict_policy(client):
    for path in (
        "/admin",
        "/admin/stores/x/y",
        "/admin/assets/js/main.js",
        "/admin/assets/style.css",
    ):
        response = await client.get(path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert response.headers["x-frame-options"] == "DENY"
    page = (await client.get("/admin")).text
    assert "<script>" not in page and "http" not in page.replace("http-equiv", "")


async def test_first_load_is_small_and_fast(live):
    async with browser_page() as page:
        await page.goto(f"{live.url}/admin")
        await page.get_by_label("Login").wait_for()
        timing = await page.evaluate(
            """() => {
                const nav = performance.getEntriesByType("navigation")[0];
                const all = [nav, ...performance.getEntriesByType("resource")];
                return {ms: Math.round(performance.now()),
                        bytes: all.reduce((n, e) => n + (e.transferSize || 0), 0),
                        files: all.length};
            }"""
        )
    print(f"console first load: {timing}")
    assert timing["bytes"] < 150_000 and timing["files"] <= 14, timing


async def test_the_column_picker_asks_only_for_the_chosen_fields(live, admin, store):
    await admin.post(f"/api/v1/{store}", json={"title": "Wide", "secret": "not needed"})
    async with browser_page() as page:
        await sign_in(page, live.url, "admin", ADMIN_PASSWORD)
        await page.goto(f"{live.url}/admin/stores/{store}")
        table = page.get_by_role("table", name=f"Entities of {store}")
        await table.get_by_text("not needed").wait_for()
        async with page.expect_request(lambda r: "only=" in r.url) as asked:
            await page.get_by_role("checkbox", name="secret").uncheck()
        url = (await asked.value).url
        assert "only=title%2CupdatedAt" in url or "only=title,updatedAt" in url
        await table.get_by_text("not needed").wait_for(state="detached")
        await table.get_by_text("Wide").wait_for()


async def test_admins_manage_users(live, admin):
    login = unique("console-user")
    async with browser_page() as page:
        await sign_in(page, live.url, "admin", ADMIN_PASSWORD)
        await page.get_by_role("link", name="Users").click()
        form = page.get_by_role("form", name="New user")
        await form.get_by_label("Login").fill(login)
        await form.get_by_label("Password").fill("first-password-1")
        await form.get_by_label("Groups").fill("sales, ops")
        await form.get_by_role("button", name="Create user").click()
        users = page.get_by_role("table", name="Users")
        await users.get_by_role("cell", name=login, exact=True).wait_for()
        await page.get_by_label(f"New password for {login}").fill("second-password-2")
        await page.get_by_role("button", name=f"Save {login}").click()
        await page.get_by_role("status").filter(has_text=f"Saved {login}").wait_for()
    async with httpx.AsyncClient(base_url=live.url) as http:
        old = await http.post(
            "/api/v1/auth/token", json={"login": login, "password": "first-password-1"}
        )
        new = await http.post(
            "/api/v1/auth/token", json={"login": login, "password": "second-password-2"}
        )
        assert old.status_code == 401 and new.status_code == 200
        me = await http.get(
            "/api/v1/_me", headers={"Authorization": f"Bearer {new.json()['token']}"}
        )
        assert me.json()["groups"] == ["sales", "ops"]


async def test_code_saves_with_if_match_and_shows_both_versions_on_conflict(live, admin, store):
    made = (await admin.post(f"/api/v1/{store}", json={"title": "Shared", "n": 1})).json()
    async with browser_page() as page:
        await sign_in(page, live.url, "admin", ADMIN_PASSWORD)
        await open_entity(page, live.url, store, made["_id"])
        editor = page.get_by_label("Entity JSON")
        mine = json.loads(await editor.input_value())
        # Someone else saves first; the page shows their change but the editor keeps mine.
        await admin.patch(f"/api/v1/{store}/{made['_id']}", json={"title": "Theirs"})
        await page.get_by_label("Fields").get_by_text("Theirs").wait_for()
        mine["title"] = "Mine"
        await editor.fill(json.dumps(mine))
        await page.get_by_role("button", name="Save", exact=True).click()
        conflict = page.get_by_role("alert", name="Conflict")
        await conflict.get_by_label("Their version").get_by_text('"Theirs"').wait_for()
        await conflict.get_by_label("Your version").get_by_text('"Mine"').wait_for()
        assert (await admin.get(f"/api/v1/{store}/{made['_id']}")).json()["title"] == "Theirs"
        await page.get_by_role("button", name="Save", exact=True).click()  # a deliberate overwrite
        await page.get_by_role("status").filter(has_text="Saved.").wait_for()
        assert (await admin.get(f"/api/v1/{store}/{made['_id']}")).json()["title"] == "Mine"


async def test_the_history_tab_shows_who_changed_what(live, admin, store):
    made = (await admin.post(f"/api/v1/{store}", json={"stage": "new"})).json()
    await admin.patch(f"/api/v1/{store}/{made['_id']}", json={"stage": "won"})
    for _ in range(100):  # the history is recorded in the background
        if len((await admin.get(f"/api/v1/{store}/{made['_id']}/_history")).json()) == 2:
            break
        await asyncio.sleep(0.05)
    async with browser_page() as page:
        await sign_in(page, live.url, "admin", ADMIN_PASSWORD)
        await open_entity(page, live.url, store, made["_id"])
        await page.get_by_role("tab", name="History").click()
        history = page.get_by_label("History")
        await history.get_by_text("rev 2 · update").wait_for()
        await history.get_by_text('"new" → "won"').wait_for()
        assert "by admin" in await history.inner_text()
        await shot(page, "history")
