"""The panel tells a person where they are and why, in Chromium at 1280 and 390 px: an
unknown /admin path is the panel's own 404 page; sign-out and an ended session land on the
sign-in form with a notice; a wrong password says how long the lock it leads to lasts;
the mailing and schedule forms show only the fields of the choice made (and all of them,
each labelled with its choice, without JavaScript)."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from playwright.async_api import Page, expect

from tests.admin_browser import PASSWORDS, WIDTHS, admin_site

# On the Citus cluster too (`pytest --citus`).
pytestmark = pytest.mark.citus

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def visible(page: Page, selector: str) -> bool:
    return await page.locator(selector).is_visible()


async def test_not_found_sign_out_ended_session_and_lockout(db_url: str, db: Conn) -> None:
    async with admin_site(db_url) as site:
        for width in WIDTHS:
            page = await site.signed_in("manager", width)
            response = await page.goto("/admin/no-such-page")
            assert response is not None and response.status == 404
            assert response.headers["content-type"].startswith("text/html")
            await expect(page.locator("main h1")).to_have_text("404")
            await expect(page.locator(".error")).to_have_text(
                "There is no page /admin/no-such-page here."
            )
            await expect(page.locator("nav[aria-label=Sections]")).to_be_visible()
            await site.check_page(page, "wayfinding-404")
            await page.set_viewport_size({"width": width, "height": 844})

            await page.click("text=Sign out")
            await page.wait_for_url("**/admin/login?why=signed_out")
            await expect(page.locator(".notice")).to_have_text("You have signed out.")
            await expect(page.locator("input[name=username]")).to_be_visible()

            # A session that ended while the page was away (idle past [admin].idle).
            await site.login(page, "manager")
            await db.execute("UPDATE admin_sessions SET last_seen_at = now() - interval '1 day'")
            await page.goto("/admin/deliveries?status=dead")
            assert "why=expired" in page.url
            await expect(page.locator(".notice")).to_contain_text(
                "Your session has ended (it was idle too long, or reached its time limit)"
            )
            # Signing in on that form leads back where the page was.
            await page.fill("input[name=username]", "manager")
            await page.fill("input[name=password]", PASSWORDS["manager"])
            await page.click("button[type=submit]")
            await page.wait_for_url("**/admin/deliveries?status=dead")
            await site.check_page(page, "wayfinding-back")

        # A form posted where the panel takes none: its own page, and a refused row.
        page = await site.signed_in("manager")
        csrf = await page.locator("input[name=csrf]").first.input_value()
        wrong_method = await page.request.post("/admin/audit", form={"csrf": csrf})
        assert wrong_method.status == 405
        assert wrong_method.headers["content-type"].startswith("text/html")
        assert "/admin/audit takes no POST here." in await wrong_method.text()
        cur = await db.execute(
            "SELECT actor, target, after ->> 'why' FROM audit_log WHERE action = 'refused'"
        )
        assert await cur.fetchall() == [("manager", "POST /admin/audit", "HTTP 405")]
        missing = await page.request.get("/admin/static/nothing.css")
        assert missing.status == 404 and "text/html" in missing.headers["content-type"]

        async with httpx.AsyncClient(base_url=site.base) as anonymous:
            lost = await anonymous.get("/admin/nothing/here")
            assert lost.status_code == 404
            assert lost.headers["content-type"].startswith("text/html")
            assert "There is no page /admin/nothing/here here." in lost.text

        # max_failures 3, lockout 600 s in the tests' settings.
        for width, name in zip(WIDTHS, ("operator", "nobody"), strict=True):
            page = await site.new_page(width)
            await site.login(page, name, "not-the-password")
            await expect(page.locator(".error")).to_have_text(
                "Wrong username or password. 2 more failed sign-ins lock this name for 10 minutes."
            )
            await site.login(page, name, "not-the-password")
            await expect(page.locator(".error")).to_have_text(
                "Wrong username or password. 1 more failed sign-in locks this name for 10 minutes."
            )
            await site.login(page, name, "not-the-password")
            await expect(page.locator(".error")).to_contain_text(
                "this name is locked for the next 10 minutes"
            )
            await expect(page.locator(".error")).to_be_visible()


async def test_forms_show_only_the_fields_of_the_choice(db_url: str, db: Conn) -> None:
    async with admin_site(db_url) as site:
        for width in WIDTHS:
            page = await site.signed_in("manager", width)
            await page.goto("/admin/mailings/new")
            topic, upload = "input[name=topic]", "input[name=audience_file]"
            await page.check("input[name=audience][value=topic]")
            assert await visible(page, topic) and not await visible(page, upload)
            await page.check("input[name=audience][value=users]")
            assert await visible(page, upload) and not await visible(page, topic)
            await page.check("input[name=audience][value=all]")
            assert not await visible(page, upload) and not await visible(page, topic)
            await site.check_page(page, "wayfinding-mailing-form")
            await page.set_viewport_size({"width": width, "height": 844})

            await page.goto("/admin/schedules/new")
            fields = {
                "static": "textarea[name=data]",
                "sql": "textarea[name=query]",
                "http": "input[name=url]",
            }
            for source in fields:
                await page.select_option("select[name=source]", source)
                shown = {s for s, selector in fields.items() if await visible(page, selector)}
                assert shown == {source}, (source, shown)
            await page.select_option("select[name=audience]", "user_ids")
            assert await visible(page, "textarea[name=user_ids]")
            assert not await visible(page, "input[name=topic]")
            await site.check_page(page, "wayfinding-schedule-form")

        # Without JavaScript every field shows, each saying which choice it is for.
        context = await site.browser.new_context(
            java_script_enabled=False, base_url=site.base, viewport={"width": 390, "height": 844}
        )
        site.contexts.append(context)
        page = await context.new_page()
        await site.login(page, "manager")
        await page.goto("/admin/mailings/new")
        await expect(page.locator("label:has(input[name=topic])")).to_contain_text(
            "for members of a topic"
        )
        await expect(page.locator("label:has(input[name=audience_file])")).to_contain_text(
            "for users in a file"
        )
        assert await visible(page, "input[name=topic]")
        await page.goto("/admin/schedules/new")
        for selector in ("textarea[name=data]", "textarea[name=query]", "input[name=url]"):
            assert await visible(page, selector), selector
        await expect(page.locator("label:has(textarea[name=query])")).to_contain_text('for "SQL"')
