"""A real Chromium (Debian's package, driven by Playwright) for the tests of web pages."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No background traffic: this machine's network is closed, and a page must load everything
# from the server under test.
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    """scripts/test installs chromium; without it the test fails in CI and skips elsewhere."""
    if os.path.exists(CHROMIUM):
        return
    if os.environ.get("CI"):
        pytest.fail(f"chromium not found at {CHROMIUM}")
    pytest.skip("chromium is not installed (scripts/test installs it with apt-get)")


@asynccontextmanager
async def browser_page(**context: Any) -> AsyncIterator[Any]:
    """A fresh page; ``context`` goes to ``new_context`` (color_scheme, permissions, ...).
    A JavaScript dialog (alert, confirm) fails the test: the console never opens one."""
    from playwright.async_api import async_playwright

    require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            made = await browser.new_context(viewport={"width": 1280, "height": 800}, **context)
            page = await made.new_page()
            dialogs: list[str] = []

            async def on_dialog(dialog: Any) -> None:
                dialogs.append(dialog.message)
                await dialog.dismiss()

            page.on("dialog", on_dialog)
            page.dialogs = dialogs
            yield page
            assert dialogs == [], f"the page opened dialogs: {dialogs}"
        finally:
            await browser.close()
