"""The admin panel in a real browser: Debian's Chromium driven by Playwright (no browser
download), against the app on a loopback port with the real database.

`admin_site(db_url)` runs the app and yields an AdminSite: its base URL, two accounts
(`manager`, `operator`), a Chromium, and helpers to sign in, to save a page's screenshot
at 1280 px and 390 px wide (under test-output/admin/) and to check that the page fits
both widths: no horizontal scroll, no overlapping controls.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from service.admin.accounts import create_user
from service.app import create_app
from service.config.base import ROOT
from tests.support import make_config, serve

CHROMIUM = "/usr/bin/chromium"
# The launch options DEVELOPERS.md gives for this machine.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = ROOT / "test-output" / "admin"
WIDTHS = (1280, 390)
PASSWORDS = {"manager": "manager-password-1", "operator": "operator-password-1"}
# Fast enough for tests: a lock after 3 failures, and short delays before answering.
ADMIN_SETTINGS: dict[str, Any] = {
    "max_failures": 3,
    "lockout": 600,
    "failure_delay": 0.05,
    "max_delay": 0.2,
}


def need_chromium() -> None:
    """Skip without Chromium, except where it must be there (CI installs it)."""
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs it with apt")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")


# Interactive elements that must not overlap one another, and the check that none do
# and that the page does not scroll sideways. Returns what is wrong, as text.
FIT_CHECK = """() => {
  const problems = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > doc.clientWidth + 1) {
    problems.push(`page scrolls sideways: ${doc.scrollWidth} > ${doc.clientWidth}`);
  }
  const controls = [...document.querySelectorAll('a, button, input, select, textarea, label')]
    .filter(e => e.offsetParent !== null && e.type !== 'hidden')
    .filter(e => !e.closest('.table-wrap'));
  const boxes = controls.map(e => [e, e.getBoundingClientRect()])
    .filter(([e, r]) => r.width > 0 && r.height > 0);
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const [a, ra] = boxes[i], [b, rb] = boxes[j];
      if (a.contains(b) || b.contains(a)) continue;
      const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
      const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
      if (w > 2 && h > 2) {
        problems.push(`overlap: ${a.outerHTML.slice(0, 60)} / ${b.outerHTML.slice(0, 60)}`);
      }
    }
  }
  return problems;
}"""


@dataclass
class AdminSite:
    base: str
    db_url: str
    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)

    async def new_page(self, width: int = 1280) -> Page:
        context = await self.browser.new_context(
            viewport={"width": width, "height": 900}, base_url=self.base
        )
        self.contexts.append(context)
        return await context.new_page()

    async def login(self, page: Page, user: str, password: str | None = None) -> None:
        await page.goto("/admin/login")
        await page.fill("input[name=username]", user)
        await page.fill("input[name=password]", password or PASSWORDS[user])
        await page.click("button[type=submit]")
        await page.wait_for_load_state()

    async def signed_in(self, user: str, width: int = 1280) -> Page:
        page = await self.new_page(width)
        await self.login(page, user)
        assert page.url.rstrip("/").endswith("/admin"), page.url
        return page

    async def check_page(self, page: Page, name: str) -> None:
        """Screenshot the page at each width, and assert it fits each one."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for width in WIDTHS:
            await page.set_viewport_size({"width": width, "height": 900})
            await page.wait_for_timeout(50)
            await page.screenshot(path=SCREENSHOTS / f"{name}-{width}.png", full_page=True)
            problems = await page.evaluate(FIT_CHECK)
            assert not problems, f"{name} at {width} px: {problems}"
        await page.set_viewport_size({"width": WIDTHS[0], "height": 900})


@asynccontextmanager
async def admin_site(db_url: str, **overrides: Any) -> AsyncIterator[AdminSite]:
    need_chromium()
    overrides.setdefault("admin", ADMIN_SETTINGS)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        for role, password in PASSWORDS.items():
            await create_user(conn, role, password, role, actor="test")  # type: ignore[arg-type]
    async with (
        serve(create_app(make_config(db_url, **overrides))) as base,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=shutil.which("chromium") or CHROMIUM, args=CHROMIUM_ARGS
        )
        site = AdminSite(base=base, db_url=db_url, browser=browser)
        try:
            yield site
        finally:
            for context in site.contexts:
                await context.close()
            await browser.close()
