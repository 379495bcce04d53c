"""Refused actions leave a trace, and bulk redelivery hides behind a dead-letter filter, in
Chromium at 1280 and 390 px: a manager's forged operator POSTs, a missing CSRF token and an
anonymous POST each get a `refused` audit row the audit page shows; "Redeliver all
matching" appears only under a dead-letter filter, naming each consumer's count, and the
server refuses it without one."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from playwright.async_api import Dialog, Page, expect

from tests.admin_browser import WIDTHS, admin_site

# On the Citus cluster too (`pytest --citus`).
pytestmark = pytest.mark.citus

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def refused_rows(db: Conn) -> list[tuple[Any, ...]]:
    cur = await db.execute(
        "SELECT actor, target, after ->> 'why', (after ->> 'status')::int FROM audit_log"
        " WHERE action = 'refused' ORDER BY id"
    )
    return await cur.fetchall()


async def seed_dead_letters(db: Conn) -> None:
    """Dead letters of two consumers: promotions 2 (one failed, one dead), goals 1; and a
    pending row that is no dead letter."""
    await db.execute(
        "INSERT INTO outbox (kind, consumer, ordering_key, payload, status, bucket) VALUES"
        " ('seen', 'promotions', 'client:a', '{}', 'dead', subject_bucket('client:a')),"
        " ('seen', 'promotions', 'client:b', '{}', 'failed', subject_bucket('client:b')),"
        " ('seen', 'goals', 'driver:c', '{}', 'dead', subject_bucket('driver:c')),"
        " ('seen', 'goals', 'driver:d', '{}', 'pending', subject_bucket('driver:d'))"
    )


async def test_refused_posts_are_audited_and_shown(db_url: str, db: Conn) -> None:
    async with admin_site(db_url) as site:
        manager = await site.signed_in("manager")
        await manager.goto("/admin/consumers")
        csrf = await manager.locator("input[name=csrf]").first.get_attribute("value")
        assert csrf
        # The manager's own valid token, on operator actions.
        for url in ("/admin/consumers/promotions/pause", "/admin/deliveries/redeliver"):
            forged = await manager.request.post(url, form={"csrf": csrf, "ids": "1"})
            assert forged.status == 403, url
        # A form without its token, and someone not signed in at all.
        stale = await manager.request.post("/admin/mailings/1/cancel", form={"csrf": "old"})
        assert stale.status == 403
        async with httpx.AsyncClient(base_url=site.base) as anonymous:
            response = await anonymous.post("/admin/consumers/goals/pause", data={"x": "1"})
            assert response.status_code == 403
        assert await refused_rows(db) == [
            ("manager", "POST /admin/consumers/promotions/pause", "needs the operator role", 403),
            ("manager", "POST /admin/deliveries/redeliver", "needs the operator role", 403),
            ("manager", "POST /admin/mailings/1/cancel", "missing or wrong CSRF token", 403),
            ("(anonymous)", "POST /admin/consumers/goals/pause", "not signed in", 403),
        ]
        # Nothing of what they asked for happened.
        cur = await db.execute("SELECT count(*) FROM consumer_controls")
        assert await cur.fetchone() == (0,)

        for width in WIDTHS:
            await manager.set_viewport_size({"width": width, "height": 844})
            await manager.goto("/admin/audit")
            await manager.click("#refused-only")
            await manager.wait_for_url("**action=refused**")
            rows = manager.locator("table.data tbody tr[data-action=refused]")
            await expect(rows).to_have_count(4)
            newest = rows.first
            await expect(newest).to_contain_text("(anonymous)")
            forged_row = rows.nth(3)
            await expect(forged_row).to_contain_text("manager")
            await expect(forged_row).to_contain_text("POST /admin/consumers/promotions/pause")
            await expect(forged_row.locator(".refused-why")).to_have_text("needs the operator role")
            badge = forged_row.locator(".health-failing")
            await expect(badge).to_have_text("refused")
            await expect(badge).to_be_visible()
            await expect(badge).to_have_css("color", "rgb(122, 11, 11)")
        await site.check_page(manager, "refusals-audit")


def confirms(page: Page) -> list[str]:
    asked: list[str] = []

    async def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    return asked


async def test_bulk_redeliver_only_under_a_dead_letter_filter(db_url: str, db: Conn) -> None:
    await seed_dead_letters(db)
    async with admin_site(db_url) as site:
        for width in WIDTHS:
            page = await site.signed_in("operator", width)
            await page.goto("/admin/deliveries")
            await expect(page.locator("#deliveries tbody tr")).to_have_count(4)
            await expect(page.locator("#redeliver-all")).to_have_count(0)
            # A filter that is not on dead letters offers nothing either.
            await page.goto("/admin/deliveries?consumer=promotions")
            await expect(page.locator("#redeliver-all")).to_have_count(0)
            await page.goto("/admin/deliveries?status=dead_letters")
            button = page.locator("#redeliver-all")
            await expect(button).to_be_visible()
            await expect(button).to_have_text("Redeliver all matching: 3 dead letters")
            await expect(page.locator("#redeliver-all-consumers")).to_have_text(
                "goals: 1, promotions: 2"
            )
            await site.check_page(page, "refusals-bulk-redeliver")

        # The server holds the same line: no dead-letter filter, no bulk redelivery.
        csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
        assert csrf
        forms: list[dict[str, str | float | bool]] = [
            {"csrf": csrf},
            {"csrf": csrf, "consumer": "promotions"},
        ]
        for form in forms:
            refused = await page.request.post("/admin/deliveries/redeliver-all", form=form)
            assert refused.status == 400
            assert "filtered to dead letters" in await refused.text()
        cur = await db.execute("SELECT count(*) FROM outbox WHERE status IN ('failed', 'dead')")
        assert await cur.fetchone() == (3,)
        assert [r[1:] for r in await refused_rows(db)] == [
            (
                "POST /admin/deliveries/redeliver-all",
                "bulk redeliver without a dead-letter filter",
                400,
            )
        ] * 2

        # Under the filter: the confirm names each consumer and its count, then requeues.
        asked = confirms(page)
        await page.goto("/admin/deliveries?status=dead_letters")
        await page.click("#redeliver-all")
        await page.wait_for_url("**done=requeued**")
        assert asked == [
            "Redeliver 3 dead letters matching this filter (goals: 1, promotions: 2)?"
            " They become pending and are sent again."
        ]
        await expect(page.locator(".notice")).to_contain_text("Requeued 3 rows")
    cur = await db.execute("SELECT count(*) FROM outbox WHERE status = 'pending'")
    assert await cur.fetchone() == (4,)
