"""Consumers and channels in /admin, in Chromium: routing and health as loaded, and the
operators' switches (pause / resume, providers off / on) with their audit rows."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from playwright.async_api import Dialog, Page, expect

from tests.admin_browser import admin_site
from tests.consumers import (
    RecordingConsumer,
    add_marks,
    client,
    http_consumer,
    running,
    scalar,
    wait_until,
)
from tests.support import make_config, serve

# On the Citus cluster too (`pytest --citus`).
pytestmark = pytest.mark.citus

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


def accept_confirms(page: Page) -> None:
    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.on("dialog", accept)


async def audit_rows(db: Conn, prefix: str) -> list[tuple[Any, ...]]:
    cur = await db.execute(
        "SELECT actor, action, target, before, after FROM audit_log"
        " WHERE action LIKE %s ORDER BY id",
        [f"{prefix}%"],
    )
    return await cur.fetchall()


async def seed_promotions_trouble(db: Conn) -> None:
    """promotions: an open breaker, 3 of 4 attempts delivered in the last hour, a backlog
    of 4 (2 due) and 2 dead letters."""
    await db.execute(
        "INSERT INTO consumer_state (consumer, status, breaker, consecutive_failures, opened_at,"
        " last_error) VALUES ('promotions', 'active', 'open', 7, now(), 'HTTP 503')"
    )
    await db.execute(
        "INSERT INTO outbox (kind, consumer, ordering_key, payload, status, next_attempt_at,"
        " created_at, bucket) SELECT 'seen', 'promotions', 'client:u' || n, '{}', 'pending',"
        " now() + make_interval(mins => n - 2), now() - interval '10 minutes',"
        " subject_bucket('client:u' || n)"
        " FROM generate_series(1, 4) AS n"
    )
    await db.execute(
        "INSERT INTO outbox (kind, consumer, ordering_key, payload, status, bucket)"
        " VALUES ('seen', 'promotions', 'client:x', '{}', 'dead', subject_bucket('client:x')),"
        "        ('seen', 'promotions', 'client:y', '{}', 'failed', subject_bucket('client:y'))"
    )
    # An attempt for each of the four pending rows, the fourth refused.
    await db.execute(
        "INSERT INTO delivery_attempts (outbox_id, attempt, consumer, started_at, duration_ms,"
        " outcome, status_code, error, bucket) SELECT o.id, 1, 'promotions',"
        " now() - make_interval(mins => 10 - o.n::integer), 5,"
        " CASE WHEN o.n = 4 THEN 'failed' ELSE 'delivered' END,"
        " CASE WHEN o.n = 4 THEN 400 ELSE 200 END,"
        " CASE WHEN o.n = 4 THEN 'HTTP 400: unknown promotion' END, o.bucket"
        " FROM (SELECT id, bucket, row_number() OVER (ORDER BY id) AS n FROM outbox"
        "       WHERE consumer = 'promotions' AND status = 'pending') AS o"
    )


async def test_operator_sees_health_pauses_and_switches_providers(db_url: str, db: Conn) -> None:
    await seed_promotions_trouble(db)
    async with admin_site(db_url) as site:
        page = await site.signed_in("operator")
        accept_confirms(page)
        await page.goto("/admin/consumers")
        row = page.locator("#health tr[data-consumer=promotions]")
        await expect(row.locator(".breaker")).to_contain_text("open")
        await expect(row.locator(".breaker")).to_contain_text("7 failures in a row")
        await expect(row.locator(".success")).to_contain_text("75 %")
        await expect(row.locator(".pending")).to_have_text("4")
        await expect(row.locator(".due")).to_have_text("2")
        await expect(row.locator(".oldest")).to_contain_text("10 min ago")
        await expect(row.locator(".dead-letters")).to_contain_text("1 failed, 1 dead")
        await expect(row.locator(".last-error")).to_contain_text("HTTP 400: unknown promotion")
        # Every consumer and channel of the config has its row, and its routing card.
        for name in ("promotions", "goals", "banners", "email", "sms", "push", "inbox"):
            await expect(page.locator(f"#health tr[data-consumer='{name}']")).to_have_count(1)
        await expect(page.locator("#c-promotions")).to_contain_text("cashback, promotions")
        providers = page.locator("#c-sms ol.providers li")
        await expect(providers).to_have_count(2)
        await expect(providers.nth(0)).to_contain_text("sms-primary")
        await expect(providers.nth(1)).to_contain_text("sms-fallback")
        await site.check_page(page, "consumers")

        # The health table refreshes itself: new rows for goals show up without a reload.
        await expect(page.locator("#health tr[data-consumer=goals] .pending")).to_have_text("0")
        await db.execute(
            "INSERT INTO outbox (kind, consumer, ordering_key, payload, bucket)"
            " SELECT 'seen', 'goals', 'driver:' || n, '{}', subject_bucket('driver:' || n)"
            " FROM generate_series(1, 3) AS n"
        )
        await expect(page.locator("#health tr[data-consumer=goals] .pending")).to_have_text(
            "3", timeout=12_000
        )

        await page.fill("#c-promotions input[name=reason]", "consumer deploy")
        await page.click("#c-promotions button.pause")
        await page.wait_for_url("**done=paused**")
        await expect(page.locator(".notice")).to_contain_text("Paused promotions")
        await expect(row.locator(".state .health")).to_have_text("paused")
        await expect(page.locator("#c-promotions .paused-note")).to_contain_text("by operator")
        cur = await db.execute("SELECT paused, changed_by, reason FROM consumer_controls")
        assert await cur.fetchall() == [(True, "operator", "consumer deploy")]
        await page.click("#c-promotions button.resume")
        await page.wait_for_url("**done=resumed**")
        # Running again, and failing: its breaker is still open.
        await expect(row.locator(".state .health")).to_have_text("failing")
        assert await scalar(db, "SELECT paused FROM consumer_controls") is False

        await page.click("#c-sms li[data-provider=sms-primary] button.provider-switch")
        await page.wait_for_url("**done=disabled**")
        primary = page.locator("#c-sms li[data-provider=sms-primary]")
        await expect(primary.locator(".badge")).to_have_text("off")
        cur = await db.execute(
            "SELECT channel, provider, enabled, changed_by FROM provider_controls"
        )
        assert await cur.fetchall() == [("sms", "sms-primary", False, "operator")]
        await primary.locator("button.provider-switch").click()
        await page.wait_for_url("**done=enabled**")
        await expect(primary.locator(".badge")).to_have_text("on")
        assert await scalar(db, "SELECT enabled FROM provider_controls") is True

    assert await audit_rows(db, "consumer.") == [
        (
            "operator",
            "consumer.pause",
            "promotions",
            {"paused": False, "reason": None},
            {"paused": True, "reason": "consumer deploy"},
        ),
        (
            "operator",
            "consumer.resume",
            "promotions",
            {"paused": True, "reason": "consumer deploy"},
            {"paused": False, "reason": None},
        ),
    ]
    assert await audit_rows(db, "provider.") == [
        ("operator", "provider.disable", "sms/sms-primary", {"enabled": True}, {"enabled": False}),
        ("operator", "provider.enable", "sms/sms-primary", {"enabled": False}, {"enabled": True}),
    ]


async def test_a_paused_consumer_gets_nothing_until_resumed(db_url: str, db: Conn) -> None:
    consumer = RecordingConsumer()
    async with serve(consumer.app) as base:
        consumers = {
            name: http_consumer(f"{base}/{name}") for name in ("promotions", "goals", "banners")
        }
        config = make_config(db_url, consumers=consumers, dispatcher={"sweep_interval": 0.3})
        async with running(config, db_url), admin_site(db_url, consumers=consumers) as site:
            page = await site.signed_in("operator")
            accept_confirms(page)
            await page.goto("/admin/consumers")
            await page.click("#c-promotions button.pause")
            await page.wait_for_url("**done=paused**")
            await add_marks(db, "promotions", "promotions", [(client("user-1"), "promo-1")])
            await asyncio.sleep(1.5)  # several sweeps
            assert consumer.requests == []
            assert await scalar(db, "SELECT status FROM outbox") == "pending"
            await page.reload()
            row = page.locator("#health tr[data-consumer=promotions]")
            await expect(row.locator(".pending")).to_have_text("1")

            await page.click("#c-promotions button.resume")
            await page.wait_for_url("**done=resumed**")

            async def delivered() -> bool:
                status: str = await scalar(db, "SELECT status FROM outbox")
                return status == "delivered"

            await wait_until(delivered, 10, "the held mark to go once resumed")
    assert [r.body["id"] for r in consumer.requests] == ["promo-1"]


async def test_a_manager_cannot_pause_or_switch(db_url: str, db: Conn) -> None:
    await seed_promotions_trouble(db)
    async with admin_site(db_url) as site:
        page = await site.signed_in("manager")
        await page.goto("/admin/consumers")
        row = page.locator("#health tr[data-consumer=promotions]")
        await expect(row.locator(".breaker")).to_contain_text("open")
        await expect(row.locator(".pending")).to_have_text("4")
        for control in ("button.pause", "button.resume", "button.provider-switch"):
            assert await page.locator(control).count() == 0, control
        await expect(page.locator("#c-sms ol.providers li")).to_have_count(2)
        csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
        assert csrf
        for url in (
            "/admin/consumers/promotions/pause",
            "/admin/consumers/promotions/resume",
            "/admin/consumers/sms/providers/sms-primary/disable",
        ):
            forged = await page.request.post(url, form={"csrf": csrf, "reason": "x"})
            assert forged.status == 403, url
    assert await scalar(db, "SELECT count(*) FROM consumer_controls") == 0
    assert await scalar(db, "SELECT count(*) FROM provider_controls") == 0
    assert await audit_rows(db, "consumer.") == []
    assert await audit_rows(db, "provider.") == []
