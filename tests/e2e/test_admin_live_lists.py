"""Live pages do not go stale, in Chromium at 1280 and 390 px: after a redelivery the
"Requeued" notice counts what is still pending and goes once the rows are delivered, and
the deliveries list shows their new state, all without a reload."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from playwright.async_api import Dialog, Page, expect

from tests.admin_browser import admin_site
from tests.consumers import RecordingConsumer, add_marks, client, http_consumer, running
from tests.support import make_config, serve

# On the Citus cluster too (`pytest --citus`).
pytestmark = pytest.mark.citus

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def accept(dialog: Dialog) -> None:
    await dialog.accept()


async def row_states(page: Page) -> list[str]:
    return await page.locator("#deliveries tbody tr[data-id] .badge").all_inner_texts()


async def test_requeued_notice_and_list_follow_the_rows(db_url: str, db: Conn) -> None:
    consumer = RecordingConsumer()
    async with serve(consumer.app) as base:
        consumers = {
            name: http_consumer(f"{base}/{name}") for name in ("promotions", "goals", "banners")
        }
        # Two marks whose deliveries ran out of retries.
        marks = [(client("u1"), "p1"), (client("u2"), "p2")]
        await add_marks(db, "promotions", "promotions", marks)
        await db.execute("UPDATE outbox SET status = 'dead'")
        async with admin_site(db_url, consumers=consumers) as site:
            page = await site.signed_in("operator")
            page.on("dialog", accept)
            await page.goto("/admin/deliveries?status=dead_letters")
            await page.click("#redeliver-all")
            await page.wait_for_url("**done=requeued**")
            await expect(page.locator("#requeue-notice")).to_have_text(
                "Requeued 2 rows: 2 still pending."
            )
            # The same notice over the whole list, on a phone.
            query = parse_qs(urlsplit(page.url).query)
            phone = await site.signed_in("operator", 390)
            await phone.goto(
                f"/admin/deliveries?done=requeued&n=2&at={query['at'][0].replace('+', '%2B')}"
            )
            await expect(phone.locator("#requeue-notice")).to_have_text(
                "Requeued 2 rows: 2 still pending."
            )
            assert await row_states(phone) == ["pending", "pending"]
            await expect(phone.locator("#requeue-notice")).to_be_visible()
            for shown in (page, phone):
                await shown.evaluate("window.plantedBeforeRefresh = 42")

            # A dispatcher delivers them: the notice goes, the list says delivered.
            config = make_config(db_url, consumers=consumers, dispatcher={"sweep_interval": 0.2})
            async with running(config, db_url):
                for shown in (page, phone):
                    await expect(shown.locator("#requeue-notice")).to_have_count(0, timeout=20_000)
                await expect(phone.locator("#deliveries tbody tr[data-id] .badge")).to_have_text(
                    ["delivered", "delivered"], timeout=20_000
                )
            for shown in (page, phone):
                assert await shown.evaluate("window.plantedBeforeRefresh") == 42  # no reload
            await site.check_page(phone, "live-deliveries-delivered")
    assert sorted(r.body["id"] for r in consumer.requests) == ["p1", "p2"]
