"""Times in the admin, in Chromium: in the viewer's own zone with UTC on hover, lists say
how long ago, and without JavaScript the UTC the server wrote stays."""

from __future__ import annotations

from typing import Any

import psycopg
from playwright.async_api import Page

from tests.admin_browser import WIDTHS, AdminSite, admin_site

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
ZONE = "Asia/Kolkata"  # UTC+5:30 all year: a half hour shows a real conversion


async def page_in(site: AdminSite, width: int, *, script: bool = True) -> Page:
    context = await site.browser.new_context(
        viewport={"width": width, "height": 844},
        base_url=site.base,
        timezone_id=ZONE,
        java_script_enabled=script,
    )
    site.contexts.append(context)
    page = await context.new_page()
    await site.login(page, "manager")
    return page


async def time_of(page: Page, selector: str) -> tuple[str, str | None]:
    node = page.locator(selector)
    return (await node.inner_text()).strip(), await node.get_attribute("title")


async def test_times_are_local_with_utc_on_hover_and_lists_say_how_long_ago(
    db_url: str, db: Conn
) -> None:
    await db.execute(
        "INSERT INTO users (id, email, created_at, updated_at) VALUES"
        " ('tara', 'tara@example.com', '2026-01-02 03:04:05+00', now() - interval '3 minutes')"
    )
    async with admin_site(db_url) as site:
        for width in WIDTHS:
            page = await page_in(site, width)
            await page.goto("/admin/users?id=tara")
            shown, hover = await time_of(page, "#contacts dd time >> nth=0")
            assert shown == "2026-01-02 08:34:05 GMT+5:30", shown
            assert hover == "2026-01-02 03:04:05 UTC"

            await page.goto("/admin/users")
            row = page.locator("#user-list tr", has_text="tara")
            shown, hover = await time_of(page, "#user-list tr:has-text('tara') time")
            assert shown == "3 min ago", shown
            assert hover is not None and hover.endswith(" UTC)") and "GMT+5:30" in hover
            assert await row.count() == 1

        # Without JavaScript: the server's UTC, as written.
        page = await page_in(site, WIDTHS[0], script=False)
        await page.goto("/admin/users?id=tara")
        shown, hover = await time_of(page, "#contacts dd time >> nth=0")
        assert shown == hover == "2026-01-02 03:04:05 UTC"
