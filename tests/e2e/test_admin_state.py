"""Trouble stands out, in Chromium at 1280 and 390 px: each consumer's health word and its
colour on the dashboard and the consumers page, the cards that change colour, and the
"needs attention" strip whose links open the filtered lists."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from playwright.async_api import Page, expect

from service.ops import controls
from tests.admin_browser import WIDTHS, admin_site

# On the Citus cluster too (`pytest --citus`).
pytestmark = pytest.mark.citus

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

# What each word looks like (service/admin/static/state.css): text colour, background.
COLOURS = {
    "healthy": ("rgb(11, 74, 31)", "rgb(220, 242, 226)"),
    "degraded": ("rgb(92, 58, 0)", "rgb(253, 239, 200)"),
    "failing": ("rgb(122, 11, 11)", "rgb(251, 218, 218)"),
    "paused": ("rgb(39, 48, 61)", "rgb(227, 232, 239)"),
}

# The contrast ratio (WCAG 2) of an element's text on its own background.
CONTRAST = """(e) => {
  const parse = c => c.match(/\\d+/g).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => {
    const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const s = getComputedStyle(e);
  const [a, b] = [lum(parse(s.color)), lum(parse(s.backgroundColor))];
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


async def seed_trouble(db: Conn, db_url: str) -> None:
    """promotions failing (breaker open, 1 of 3 delivered, a dead letter); goals degraded
    (a row due 5 minutes ago, not taken); banners paused; the channels healthy."""
    await db.execute(
        "INSERT INTO consumer_state (consumer, status, breaker, consecutive_failures, opened_at,"
        " last_error) VALUES ('promotions', 'active', 'open', 7, now(), 'HTTP 503')"
    )
    await db.execute(
        "INSERT INTO outbox (kind, consumer, ordering_key, payload, status, bucket)"
        " VALUES ('seen', 'promotions', 'client:x', '{}', 'dead', subject_bucket('client:x'))"
    )
    await db.execute(
        "INSERT INTO delivery_attempts (outbox_id, attempt, consumer, started_at, duration_ms,"
        " outcome, bucket) SELECT n, 1, 'promotions', now() - interval '5 minutes', 5,"
        " CASE WHEN n = 1 THEN 'delivered' ELSE 'failed' END, subject_bucket('k')"
        " FROM generate_series(1, 3) AS n"
    )
    await db.execute(
        "INSERT INTO outbox (kind, consumer, ordering_key, payload, next_attempt_at, bucket)"
        " VALUES ('seen', 'goals', 'driver:d1', '{}', now() - interval '5 minutes',"
        " subject_bucket('driver:d1'))"
    )
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        await controls.pause(conn, "banners", "operator", "banner deploy")
        await conn.commit()


async def word_of(page: Page, scope: str, name: str) -> str:
    return await page.locator(f"{scope} tr[data-consumer='{name}'] .health").inner_text()


async def assert_looks(page: Page, selector: str, word: str) -> None:
    """The element says `word`, in that word's colours, readable (contrast at least 4.5)."""
    element = page.locator(selector).first
    await expect(element).to_have_text(word)
    await expect(element).to_be_visible()
    colour, background = COLOURS[word]
    await expect(element).to_have_css("color", colour)
    await expect(element).to_have_css("background-color", background)
    assert await element.evaluate(CONTRAST) >= 4.5, selector


async def test_health_words_colours_and_the_needs_attention_strip(db_url: str, db: Conn) -> None:
    await seed_trouble(db, db_url)
    async with admin_site(db_url) as site:
        for width in WIDTHS:
            page = await site.signed_in("manager", width)
            dash = "#dash-health"
            expected = {
                "promotions": "failing",
                "goals": "degraded",
                "banners": "paused",
                "email": "healthy",
                "sms": "healthy",
            }
            for name, word in expected.items():
                await assert_looks(page, f"{dash} tr[data-consumer='{name}'] .health", word)
            # The cards say their state in words and colours.
            await assert_looks(page, "#stat-dead .health", "degraded")
            await expect(page.locator("#stat-dead")).to_have_css(
                "background-color", "rgb(255, 250, 235)"
            )
            await assert_looks(page, "#stat-backlog .health", "degraded")  # goals, 5 min late

            strip = page.locator("#attention .attention-item")
            texts = [" ".join(t.split()) for t in await strip.all_inner_texts()]
            assert texts == [
                "failing promotions: breaker open (7 failures)",
                "failing promotions: 33 % of 3 attempts delivered, last hour",
                "degraded goals: oldest due row waiting 5 min",
                "degraded promotions: 1 dead letter waiting",
                "paused banners: paused, its rows wait",
            ], texts
            await expect(page.locator("#attention .all-clear")).to_have_count(0)
            await site.check_page(page, "state-dashboard-trouble")
            await page.set_viewport_size({"width": width, "height": 844})

            # Each item leads to the list that shows it.
            await page.click("#attention a:has-text('1 dead letter waiting')")
            await page.wait_for_url("**/admin/deliveries?**")
            assert "consumer=promotions" in page.url and "status=dead_letters" in page.url
            rows = page.locator("#deliveries tbody tr")
            await expect(rows).to_have_count(1)
            await expect(rows.first).to_contain_text("promotions")
            await expect(rows.first.locator(".badge")).to_have_text("dead")
            await page.go_back()
            await page.click("#attention a:has-text('oldest due row waiting')")
            await page.wait_for_url("**/admin/deliveries?**")
            assert "consumer=goals" in page.url and "status=pending" in page.url
            await expect(page.locator("#deliveries tbody tr")).to_have_count(1)
            await expect(page.locator("#deliveries tbody tr .badge")).to_have_text("pending")
            await page.go_back()
            await page.click("#attention a:has-text('banners: paused')")
            await page.wait_for_url("**/admin/consumers#c-banners")

            # The consumers page: the same words, with their reasons.
            for name, word in expected.items():
                await assert_looks(page, f"#health tr[data-consumer='{name}'] .health", word)
            promotions = page.locator("#health tr[data-consumer=promotions] .state")
            await expect(promotions).to_contain_text("breaker open (7 failures)")
            await expect(promotions).to_contain_text("1 dead letter waiting")
            await site.check_page(page, "state-consumers")

        # Trouble over: the open dashboard turns quiet at its next refresh, no reload.
        page = await site.signed_in("manager")
        await expect(page.locator("#attention .attention-item")).to_have_count(5)
        await db.execute("DELETE FROM outbox")
        await db.execute("DELETE FROM delivery_attempts")
        await db.execute("DELETE FROM consumer_state")
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            await controls.resume(conn, "banners", "operator")
            await conn.commit()
        await expect(page.locator("#attention .all-clear")).to_have_text(
            "All clear: every consumer and channel is healthy.", timeout=15_000
        )
        await expect(page.locator("#attention .attention-item")).to_have_count(0)
        await assert_looks(page, "#stat-dead .health", "healthy")
        await assert_looks(page, "#stat-backlog .health", "healthy")
        await assert_looks(page, "#dash-health tr[data-consumer='promotions'] .health", "healthy")
