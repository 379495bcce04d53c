"""Deliveries in /admin, in Chromium: browse and filter the outbox, read a dead letter's
attempts, redeliver it (operators only) through bin/redeliver's code path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from playwright.async_api import Dialog, Page, expect

from tests.admin_browser import admin_site
from tests.consumers import (
    Received,
    RecordingConsumer,
    Reply,
    add_marks,
    client,
    driver,
    http_consumer,
    running,
    scalar,
    wait_until,
)
from tests.support import make_config, serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

# On the Citus cluster too (`pytest --citus`): the deliveries page and its redelivery.
pytestmark = pytest.mark.citus


@asynccontextmanager
async def serve_consumer(consumer: RecordingConsumer) -> AsyncIterator[dict[str, Any]]:
    """The recording consumer on loopback; yields the test config's consumers, all of
    them pointing at it."""
    async with serve(consumer.app) as base:
        yield {
            "promotions": http_consumer(f"{base}/client"),
            "goals": http_consumer(f"{base}/driver"),
            "banners": http_consumer(f"{base}/anonymous"),
        }


async def statuses(db: Conn) -> dict[str, str]:
    """Each seen row's item id -> its outbox status."""
    cur = await db.execute("SELECT payload->>'id', status FROM outbox WHERE kind = 'seen'")
    return {item: status for item, status in await cur.fetchall()}


async def audit_rows(db: Conn, action_name: str) -> list[tuple[Any, ...]]:
    cur = await db.execute(
        "SELECT actor, target, before, after FROM audit_log WHERE action = %s ORDER BY id",
        [action_name],
    )
    return await cur.fetchall()


def accept_confirms(page: Page) -> list[str]:
    """Accept every confirm() the page asks (Playwright would dismiss it); their texts."""
    asked: list[str] = []

    async def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    return asked


async def shown_ids(page: Page) -> list[int]:
    ids = await page.locator("#deliveries tbody tr[data-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.id)"
    )
    return [int(i) for i in ids]


async def dead_notification(db: Conn, user_id: str, event_type: str, channel: str) -> int:
    """A notification's outbox row whose retries ran out, with its two attempts."""
    notification = await scalar(
        db,
        "INSERT INTO notifications (event_id, user_id, type, category, bucket)"
        " VALUES (gen_random_uuid(), %s, %s, 'billing', user_bucket(%s)) RETURNING id",
        [user_id, event_type, user_id],
    )
    outbox_id: int = await scalar(
        db,
        "INSERT INTO outbox (kind, consumer, ordering_key, payload, status, attempts,"
        " last_error, notification_id, created_at, updated_at, bucket)"
        " VALUES ('notification', %s, %s, '{}', 'dead', 2, 'HTTP 503 from sms-fallback', %s,"
        " now() - interval '1 hour', now() - interval '50 minutes', user_bucket(%s))"
        " RETURNING id",
        [channel, user_id, notification, user_id],
    )
    await db.execute(
        "INSERT INTO delivery_attempts (outbox_id, attempt, consumer, started_at, duration_ms,"
        " outcome, status_code, error, provider, bucket) VALUES"
        " (%(id)s, 1, %(c)s, now() - interval '55 minutes', 120, 'retry', 503,"
        "  'HTTP 503 from sms-primary', 'sms-primary', user_bucket(%(user)s)),"
        " (%(id)s, 2, %(c)s, now() - interval '50 minutes', 80, 'dead', 503,"
        "  'HTTP 503 from sms-fallback', 'sms-fallback', user_bucket(%(user)s))",
        {"id": outbox_id, "c": channel, "user": user_id},
    )
    return outbox_id


async def test_operator_filters_reads_and_redelivers_a_refused_mark(db_url: str, db: Conn) -> None:
    refused = {"promo-bad"}

    async def answer(received: Received) -> Reply:
        return (400, {}) if received.body["id"] in refused else (200, {})

    consumer = RecordingConsumer(answer)
    async with serve_consumer(consumer) as consumers:
        config = make_config(db_url, consumers=consumers, dispatcher={"sweep_interval": 0.3})
        async with running(config, db_url), admin_site(db_url, consumers=consumers) as site:
            await add_marks(
                db,
                "promotions",
                "promotions",
                [(client("user-1"), "promo-ok"), (client("user-2"), "promo-bad")],
            )
            await add_marks(db, "goals", "personal-goals", [(driver("park-1", "drv-1"), "goal-1")])

            async def settled() -> bool:
                return await statuses(db) == {
                    "promo-ok": "delivered",
                    "promo-bad": "failed",
                    "goal-1": "delivered",
                }

            await wait_until(settled, 15, "two deliveries and one refusal")
            bad = await scalar(db, "SELECT id FROM outbox WHERE payload->>'id' = 'promo-bad'")
            goal = await scalar(db, "SELECT id FROM outbox WHERE payload->>'id' = 'goal-1'")
            subject = await scalar(db, "SELECT ordering_key FROM outbox WHERE id = %s", [bad])

            page = await site.signed_in("operator")
            asked = accept_confirms(page)
            await page.goto("/admin/deliveries")
            assert len(await shown_ids(page)) == 3
            await site.check_page(page, "deliveries")

            # Filters: by status, by tag, by subject; each one narrows what is listed.
            await page.select_option("select[name=status]", "dead_letters")
            await page.click("#delivery-filters button[type=submit]")
            await page.wait_for_url("**status=dead_letters**")
            assert await shown_ids(page) == [bad]
            row = page.locator(f"#deliveries tr[data-id='{bad}']")
            await expect(row).to_contain_text("failed")
            await expect(row).to_contain_text("HTTP 400")
            await page.goto("/admin/deliveries?what=tag:personal-goals")
            assert await shown_ids(page) == [goal]
            assert await page.locator("input[name=ids]").count() == 0  # delivered: no tick
            await page.goto("/admin/deliveries")
            await page.fill("input[name=subject]", subject)
            await page.click("#delivery-filters button[type=submit]")
            await page.wait_for_url("**subject=**")
            assert await shown_ids(page) == [bad]

            # The dead letter's own page: its payload and every attempt with its status code.
            await page.click(f"#deliveries a[href='/admin/deliveries/{bad}']")
            await page.wait_for_url(f"**/admin/deliveries/{bad}")
            await expect(page.locator("#delivery-facts")).to_contain_text("failed")
            attempts = page.locator("#attempts tbody tr")
            await expect(attempts).to_have_count(1)
            await expect(attempts.first).to_contain_text("400")
            await expect(attempts.first).to_contain_text("failed")
            await expect(page.locator("pre.payload")).to_contain_text('"id": "promo-bad"')
            await site.check_page(page, "delivery")

            # The consumer is fixed; the operator ticks the row and redelivers it.
            refused.clear()
            await page.goto("/admin/deliveries?status=dead_letters")
            await page.check(f"input[name=ids][value='{bad}']")
            await page.click("#redeliver-selected")
            await page.wait_for_url("**done=requeued**")
            await expect(page.locator(".notice")).to_contain_text("Requeued 1 row")
            assert asked and "Redeliver the ticked dead letters" in asked[-1]
            assert await scalar(db, "SELECT status FROM outbox WHERE id = %s", [bad]) in (
                "pending",
                "delivered",
            )

            async def delivered() -> bool:
                return (await statuses(db))["promo-bad"] == "delivered"

            await wait_until(delivered, 10, "the redelivered mark to arrive")
            await page.goto(f"/admin/deliveries/{bad}")
            await expect(page.locator("#attempts tbody tr")).to_have_count(2)
            await expect(page.locator("#redeliver-one")).to_have_count(0)

    # The same webhook-id both times: the consumer can tell it is the same mark.
    tries = [r for r in consumer.requests if r.body["id"] == "promo-bad"]
    assert [status for r, status in consumer.answered if r in tries] == [400, 200]
    assert len({r.webhook_id for r in tries}) == 1
    # One audit row describes the action, with the admin as the actor.
    [(actor, target, before, after)] = await audit_rows(db, "redeliver")
    assert actor == "operator"
    assert f"{bad}" in target
    assert before == {"failed": {"promotions": 1}}
    assert after == {"requeued": 1, "by_consumer": {"promotions": 1}}


async def test_operator_pages_through_and_redelivers_everything_a_filter_matches(
    db_url: str, db: Conn
) -> None:
    # 60 delivered marks, three dead SMS of one event type, one refused mark elsewhere.
    await db.execute(
        "INSERT INTO outbox (kind, consumer, ordering_key, payload, status, attempts, bucket)"
        " SELECT 'seen', 'goals', 'driver:park-1:drv-' || n,"
        "        jsonb_build_object('tag', 'personal-goals', 'id', 'goal-' || n), 'delivered', 1,"
        "        subject_bucket('driver:park-1:drv-' || n)"
        " FROM generate_series(1, 60) AS n"
    )
    dead = [await dead_notification(db, f"user-{n}", "payment_receipt", "sms") for n in range(3)]
    other = await scalar(
        db,
        "INSERT INTO outbox (kind, consumer, ordering_key, payload, status, attempts,"
        " last_error, bucket) VALUES ('seen', 'promotions', 'client:u',"
        " '{\"tag\": \"promotions\"}', 'failed', 1, 'HTTP 400', subject_bucket('client:u'))"
        " RETURNING id",
    )
    async with admin_site(db_url) as site:
        page = await site.signed_in("operator")
        asked = accept_confirms(page)
        await page.goto("/admin/deliveries")
        first = await shown_ids(page)
        assert len(first) == 50 and first == sorted(first, reverse=True)
        await page.click("#older")
        second = await shown_ids(page)
        assert len(second) == 14 and max(second) < min(first)
        assert await page.locator("#older").count() == 0

        # A notification's dead letter: its attempts went through two providers.
        await page.goto(f"/admin/deliveries/{dead[0]}")
        await expect(page.locator("#delivery-facts")).to_contain_text("payment_receipt")
        await expect(page.locator("#attempts")).to_contain_text("sms-fallback")
        await expect(page.locator("#attempts")).to_contain_text("503")

        await page.goto("/admin/deliveries")
        await page.select_option("select[name=what]", "type:payment_receipt")
        await page.select_option("select[name=status]", "dead_letters")
        await page.click("#delivery-filters button[type=submit]")
        await page.wait_for_url("**what=type**")
        assert sorted(await shown_ids(page)) == dead
        await expect(page.locator("#redeliver-all")).to_contain_text(
            "Redeliver all matching: 3 dead letters"
        )
        await page.click("#redeliver-all")
        await page.wait_for_url("**done=requeued**")
        assert asked == [
            "Redeliver 3 dead letters matching this filter (sms: 3)?"
            " They become pending and are sent again."
        ]
        await expect(page.locator(".notice")).to_contain_text("Requeued 3 rows")
        assert await shown_ids(page) == []  # the filter is kept: no dead letters left

    cur = await db.execute("SELECT id, status, attempt_base FROM outbox WHERE id = ANY(%s)", [dead])
    assert sorted(await cur.fetchall()) == [(i, "pending", 2) for i in dead]
    assert await scalar(db, "SELECT status FROM outbox WHERE id = %s", [other]) == "failed"
    [(actor, target, before, after)] = await audit_rows(db, "redeliver")
    assert actor == "operator"
    # The filter it was chosen by is on record, as bin/redeliver records its own.
    assert '"event_types":["payment_receipt"]' in target and '"rows":3' in target
    assert before == {"dead": {"sms": 3}}
    assert after == {"requeued": 3, "by_consumer": {"sms": 3}}


async def test_a_manager_cannot_redeliver(db_url: str, db: Conn) -> None:
    dead = await dead_notification(db, "user-1", "payment_receipt", "sms")
    async with admin_site(db_url) as site:
        page = await site.signed_in("manager")
        await page.goto("/admin/deliveries?status=dead_letters")
        assert await shown_ids(page) == [dead]
        # Managers read everything, but there is nothing to press.
        for control in ("input[name=ids]", "#redeliver-selected", "#redeliver-all"):
            assert await page.locator(control).count() == 0, control
        await page.goto(f"/admin/deliveries/{dead}")
        await expect(page.locator("#attempts tbody tr")).to_have_count(2)
        assert await page.locator("#redeliver-one").count() == 0
        # A forged POST with the manager's own, valid CSRF token.
        csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
        assert csrf
        forged = await page.request.post(
            "/admin/deliveries/redeliver", form={"csrf": csrf, "ids": str(dead)}
        )
        assert forged.status == 403
        forged_all = await page.request.post(
            "/admin/deliveries/redeliver-all", form={"csrf": csrf, "status": "dead_letters"}
        )
        assert forged_all.status == 403
    assert await scalar(db, "SELECT status FROM outbox WHERE id = %s", [dead]) == "dead"
    assert await audit_rows(db, "redeliver") == []
