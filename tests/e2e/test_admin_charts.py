"""The dashboard's charts in Chromium: each fills its card at 1280 and 390 px, and when
all is well they say so in words that are true ("No failures in the last hour", "Nothing
waiting and no dead letters") rather than "No data"."""

from __future__ import annotations

from typing import Any

import psycopg
from playwright.async_api import Page

from tests.admin_browser import WIDTHS, admin_site
from tests.consumers import scalar
from tests.e2e.test_admin_deliveries import dead_notification

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

# Each chart's width over its box's inner width (its card, or its half of the backlog's).
FILL = """() => [...document.querySelectorAll('.dash svg.chart')].map(svg => {
  const card = svg.parentElement;
  const style = getComputedStyle(card);
  const inner = card.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return svg.getBoundingClientRect().width / inner;
})"""


async def chart_texts(page: Page) -> str:
    return " ".join(await page.locator(".dash svg.chart text").all_text_contents())


async def delivered_attempt(db: Conn) -> None:
    """An email delivered a few minutes ago, with its one attempt."""
    outbox_id = await scalar(
        db,
        "INSERT INTO outbox (kind, consumer, ordering_key, payload, status, attempts, bucket)"
        " VALUES ('notification', 'email', 'ada', '{}', 'delivered', 1, user_bucket('ada'))"
        " RETURNING id",
    )
    await db.execute(
        "INSERT INTO delivery_attempts (outbox_id, attempt, consumer, started_at, duration_ms,"
        " outcome, status_code, bucket) VALUES (%s, 1, 'email', now() - interval '5 minutes',"
        " 40, 'delivered', 250, user_bucket('ada'))",
        [outbox_id],
    )


async def test_charts_fill_their_cards_and_say_what_is_true(db_url: str, db: Conn) -> None:
    async with admin_site(db_url) as site:
        for width in WIDTHS:
            page = await site.signed_in("manager", width)
            texts = await chart_texts(page)
            assert "No delivery attempts in the last hour" in texts
            assert "Nothing waiting and no dead letters" in texts
            assert "No data" not in texts
            fills = await page.evaluate(FILL)
            assert len(fills) == 3 and all(f > 0.97 for f in fills), (width, fills)

        await delivered_attempt(db)
        page = await site.signed_in("manager")
        assert await page.locator("#no-failures").inner_text() == "No failures in the last hour."
        await dead_notification(db, "bea", "invoice_paid", "sms")
        await page.reload()
        assert await page.locator("#no-failures").count() == 0
        assert (
            "sms (channel) · dead: 1" in await page.locator("svg.chart title").all_text_contents()
        )
        for width in WIDTHS:
            await page.set_viewport_size({"width": width, "height": 844})
            fills = await page.evaluate(FILL)
            assert all(f > 0.97 for f in fills), (width, fills)
