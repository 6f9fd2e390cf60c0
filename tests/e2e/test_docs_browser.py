"""The /api/docs reference page in a real browser: it renders the live OpenAPI document,
defined stores included, from the server's own assets alone."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.browser import browser_page
from tests.e2e.live import ADMIN_PASSWORD
from tests.helpers import unique

pytestmark = pytest.mark.asyncio


async def test_the_reference_page_renders_every_section(live):
    store = unique("shown")
    async with httpx.AsyncClient(base_url=live.url) as http:
        login = {"login": "admin", "password": ADMIN_PASSWORD}
        token = (await http.post("/api/v1/auth/token", json=login)).json()["token"]
        definition = {"title": "Shown", "schema": {"type": "object", "properties": {"a": {}}}}
        response = await http.put(
            f"/api/v1/_stores/{store}",
            json=definition,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
    requested: list[str] = []
    async with browser_page() as page:
        page.on("request", lambda request: requested.append(request.url))
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"{live.url}/api/docs")
        await page.wait_for_selector("text=Entity platform API", timeout=20_000)
        for section in ("auth", "stores", "entities", f"store: {store}"):
            await page.wait_for_selector(f"h3 >> text='{section}'", timeout=10_000)
        # Open one operation: its parameters come from the document.
        await page.locator(f'[data-path="/api/v1/{store}/{{id}}/access"]').first.click()
        await page.wait_for_selector(".opblock.is-open .parameters", timeout=10_000)
        opened = await page.locator(".opblock.is-open").first.inner_text()
        assert "Set owner (admins), group, access and branch" in opened
        assert "The entity's id" in opened
        assert errors == []
    assert requested and all(url.startswith(live.url) for url in requested), requested
