"""A mailing's progress tells the truth from the first second, in Chromium at 1280 and 390
px: right after "Send now" the fan-out's own count (chunks done of chunks, users covered,
nothing queued yet), then the deliveries; at 100 % "Cancel mailing" is gone and the page
stops refreshing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from playwright.async_api import Page, expect

from service.sql import q
from tests.admin_browser import admin_site
from tests.consumers import running
from tests.e2e.test_admin_mailings import accept_dialogs, fill_texts, mailing_id_of, new_mailing
from tests.support import make_config, notify_data

# On the Citus cluster too (`pytest --citus`).
pytestmark = pytest.mark.citus

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
CHUNK = 100  # the smallest [notify].chunk_size: 150 users make two chunks


async def progress_words(page: Page) -> str:
    return " ".join((await page.locator("#mailing-progress p").first.inner_text()).split())


async def test_progress_shows_the_fan_out_until_deliveries_exist(db_url: str, db: Conn) -> None:
    # 150 users of a topic, without contacts: their inbox gets it, email and push cannot.
    await db.execute(
        "INSERT INTO users (id) SELECT 'u' || lpad(n::text, 3, '0')"
        " FROM generate_series(1, 150) AS n"
    )
    await db.execute("INSERT INTO user_topics (topic, user_id) SELECT 'all-hands', id FROM users")
    notify = notify_data()["notify"] | {"chunk_size": CHUNK}
    overrides: dict[str, Any] = {"notify": notify, "dispatcher": {"sweep_interval": 0.2}}
    async with admin_site(db_url, **overrides) as site:
        page = await site.signed_in("manager")
        page.on("dialog", accept_dialogs)
        await new_mailing(page)
        await page.fill("[name=name]", "All hands")
        await fill_texts(page, "en", "Hello")
        await page.check("input[name=audience][value=topic]")
        await page.fill("[name=topic]", "all-hands")
        await page.click("button:has-text('Save draft')")
        await page.wait_for_load_state()
        mailing_id = mailing_id_of(page)
        await page.click("#send")
        await page.wait_for_load_state()
        assert "Sent" in await page.locator(".notice").inner_text()
        # No dispatcher yet: the fan-out has not started, and the page says so.
        phone = await site.signed_in("manager", 390)
        await phone.goto(f"/admin/mailings/{mailing_id}")
        for shown in (page, phone):
            assert await progress_words(shown) == (
                "0 % done · fanning out: 0 of 2 chunks done, 0 users covered; nothing queued yet"
            )
            await expect(shown.locator("#cancel")).to_be_visible()
        await site.check_page(phone, "mailing-progress-start")
        await phone.set_viewport_size({"width": 390, "height": 844})

        # One chunk, by the fan-out's own step: 100 users covered, their deliveries
        # decided (inbox queued; email and push suppressed, no contact). The share is held
        # to the fan-out's half, though two thirds of what exists is decided.
        cur = await db.execute(
            "SELECT e.id FROM events AS e WHERE e.idempotency_key = %s",
            (f"mailing:{mailing_id}",),
        )
        row = await cur.fetchone()
        assert row is not None
        await db.execute(q("materialize_step"), {"event_id": row[0], "chunk": CHUNK})
        for shown in (page, phone):
            await expect(shown.locator("#mailing-progress p").first).to_contain_text(
                "50 % done · fanning out: 1 of 2 chunks done, 100 users covered", timeout=10_000
            )

        # The list of mailings follows too.
        listing = await site.signed_in("manager", 390)
        await listing.goto("/admin/mailings")
        cell = listing.locator("tbody tr", has_text="All hands").locator(".mailing-progress-cell")
        assert "100 %" not in await cell.inner_text()
        await listing.evaluate("window.plantedBeforeRefresh = 42")

        # A dispatcher takes the rest: the fan-out ends, the inbox items go, 100 %.
        config = make_config(db_url, **overrides)
        async with running(config, db_url):
            for shown in (page, phone):
                # A bound, not a wait: on a busy Citus cluster the deliveries took over 30 s.
                await expect(shown.locator(".mailing-percent")).to_have_text(
                    "100 % done", timeout=120_000
                )
                # Nothing left to cancel, and the page no longer refreshes.
                await expect(shown.locator("#cancel")).to_have_count(0)
                await expect(shown.locator("[data-refresh-stop]")).to_have_count(1)
                assert "150 users notified" in await progress_words(shown)
            await expect(cell).to_contain_text("100 %", timeout=15_000)
            assert await listing.evaluate("window.plantedBeforeRefresh") == 42  # no reload
        await site.check_page(page, "mailing-progress-done")
