"""Schedules in the admin, in Chromium: create (a bad cron refused, nothing stored), edit,
disable and enable, run now with the run in the history, next run times; an audit row for
each action."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
import pytest
from playwright.async_api import Page

from service.config.schedule import SqlSource
from service.schedule_store import add_schedule, get_schedule, next_run
from tests.admin_browser import admin_site
from tests.consumers import scalar
from tests.schedules import NEWSLETTER, add_users, api_config, make, newsletter, schedule_data

# On the Citus cluster too (`pytest --citus`).
pytestmark = pytest.mark.citus

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


async def facts(page: Page) -> dict[str, str]:
    names = await page.locator("dl.facts dt").all_inner_texts()
    values = await page.locator("dl.facts dd").all_inner_texts()
    return dict(zip(names, values, strict=True))


async def history(page: Page) -> list[list[str]]:
    return [
        [c.strip() for c in await row.locator("td").all_inner_texts()]
        for row in await page.locator("#runs tbody tr").all()
    ]


def local_times(cron: str, count: int = 3) -> list[str]:
    """The next times as the page writes them: in Berlin, computed as the scheduler does."""
    times = [next_run(cron, "Europe/Berlin", datetime.now(UTC))]
    while len(times) < count:
        times.append(next_run(cron, "Europe/Berlin", times[-1], times[-1]))
    return [t.astimezone(BERLIN).strftime("%a %Y-%m-%d %H:%M") for t in times]


async def test_create_edit_switch_and_run_a_schedule(db_url: str, db: Conn) -> None:
    await add_users(db, ["u1", "u2"], topic="newsletter")
    async with admin_site(db_url, **api_config(schedule_data(db_url))) as site:
        page = await site.signed_in("manager")
        await page.click("nav >> text=Schedules")
        assert "No schedules yet." in await page.locator("#schedules").inner_text()
        await page.click("text=New schedule")
        await site.check_page(page, "schedule-new")

        await page.fill("input[name=name]", "monday-news")
        await page.fill("input[name=cron]", "61 9 * * 1")
        await page.fill("input[name=timezone]", "Europe/Berlin")
        await page.select_option("select[name=event_type]", "weekly_newsletter")
        await page.select_option("select[name=audience]", "topic")
        await page.fill("input[name=topic]", "newsletter")
        await page.select_option("select[name=source]", "static")
        await page.fill("textarea[name=data]", msgspec.json.encode(NEWSLETTER).decode())
        await page.click("text=Create schedule")
        error = await page.locator("p.error").inner_text()
        assert "cron: '61 9 * * 1' is not a cron expression" in error
        assert await scalar(db, "SELECT count(*) FROM schedules") == 0
        # The form comes back as it was sent, to be corrected.
        assert await page.input_value("input[name=name]") == "monday-news"
        assert await page.input_value("input[name=topic]") == "newsletter"
        await site.check_page(page, "schedule-new-error")

        await page.fill("input[name=cron]", "0 9 * * 1")
        await page.click("text=Create schedule")
        await page.wait_for_url("**/admin/schedules/monday-news?done=created")
        assert await page.locator("p.notice").inner_text() == "Schedule created."
        shown = await facts(page)
        assert shown["Cron"] == "0 9 * * 1 in Europe/Berlin"
        assert shown["Audience"] == "topic newsletter"
        assert shown["State"] == "enabled"
        next_runs = await page.locator("#next-runs li").all_inner_texts()
        assert [t.split(" (")[0] for t in next_runs] == local_times("0 9 * * 1")
        assert all(t.startswith("Mon ") and " 09:00" in t for t in next_runs)
        stored = await get_schedule(db, "monday-news")
        assert stored is not None and stored.origin == "cli"
        assert stored.settings.audience.topic == "newsletter"
        assert stored.next_run_at is not None
        assert stored.next_run_at.astimezone(BERLIN).strftime("%a %H:%M") == "Mon 09:00"
        await site.check_page(page, "schedule")

        await page.click("text=Edit")
        await site.check_page(page, "schedule-edit")
        await page.fill("input[name=cron]", "30 8 * * 1-5")
        await page.fill("input[name=description]", "Weekday mornings")
        await page.click("button:has-text('Save')")
        await page.wait_for_url("**/admin/schedules/monday-news?done=updated")
        shown = await facts(page)
        assert shown["Cron"] == "30 8 * * 1-5 in Europe/Berlin"
        assert shown["Description"] == "Weekday mornings"
        next_runs = await page.locator("#next-runs li").all_inner_texts()
        assert [t.split(" (")[0] for t in next_runs] == local_times("30 8 * * 1-5")

        await page.click("button:has-text('Disable')")
        await page.wait_for_url("**/admin/schedules/monday-news?done=disabled")
        assert (await facts(page))["Next runs"] == "none while disabled"
        assert await scalar(db, "SELECT enabled FROM schedules") is False
        await page.click("button:has-text('Enable')")
        await page.wait_for_url("**/admin/schedules/monday-news?done=enabled")
        assert (await facts(page))["State"] == "enabled"
        assert await scalar(db, "SELECT enabled FROM schedules") is True

        page.once("dialog", lambda dialog: dialog.accept())
        await page.click("button:has-text('Run now')")
        await page.wait_for_url("**/admin/schedules/monday-news?done=run*")
        notice = await page.locator("p.notice").inner_text()
        event_id = await scalar(db, "SELECT id::text FROM events")
        assert notice == f"Run now: sent, event {event_id}"
        [run] = await history(page)
        assert run[1:4] == ["manual", "sent", "1"] and run[5] == event_id
        # Posted through the intake as every scheduled event: its producer, the topic (a
        # dispatcher fans it out), the key of this schedule and second.
        cur = await db.execute("SELECT producer, recipients, idempotency_key FROM events")
        assert await cur.fetchall() == [
            (
                "mark-notify:schedules",
                {"topic": "newsletter"},
                f"schedule:monday-news:{run[0].removesuffix(' UTC').replace(' ', 'T')}+00:00",
            )
        ]

        await page.click("text=All schedules")
        row = page.locator("#schedules tr[data-schedule=monday-news]")
        cells = await row.locator("td").all_inner_texts()
        assert cells[1:7] == [
            "30 8 * * 1-5",
            "Europe/Berlin",
            "weekly_newsletter",
            "topic newsletter",
            "static",
            "enabled",
        ]
        assert await row.locator("ol.times li").count() == 3
        assert (await row.locator("td").nth(8).inner_text()).startswith("sent")
        await site.check_page(page, "schedules")

    cur = await db.execute(
        "SELECT action, target, before, after FROM audit_log WHERE actor = 'manager' ORDER BY id"
    )
    rows = await cur.fetchall()
    assert [(r[0], r[1]) for r in rows] == [
        ("login", "manager"),
        ("schedule.create", "monday-news"),
        ("schedule.update", "monday-news"),
        ("schedule.disable", "monday-news"),
        ("schedule.enable", "monday-news"),
        ("schedule.run", "monday-news"),
    ]
    create, update, disable, enable, run_row = (r[2:] for r in rows[1:])
    assert create[1]["cron"] == "0 9 * * 1" and create[1]["source"]["data"] == NEWSLETTER
    assert (update[0]["cron"], update[1]["cron"]) == ("0 9 * * 1", "30 8 * * 1-5")
    assert (disable[0]["enabled"], disable[1]["enabled"]) == (True, False)
    assert (enable[0]["enabled"], enable[1]["enabled"]) == (False, True)
    assert run_row[1]["outcome"] == "sent" and run_row[1]["event_id"] == event_id


async def test_a_failed_run_and_a_config_schedule(db_url: str, db: Conn) -> None:
    data = schedule_data(db_url)
    data["schedules"] = {"weekly": newsletter(audience={"user_ids": ["u1"]})}
    await add_users(db, ["u1"])
    # A query that cannot work: the run fails at once (not a passing failure).
    config = make(data)
    settings = msgspec.structs.replace(
        config.schedules["weekly"], source=SqlSource(query="SELECT 1/0 AS title", shape="row")
    )
    await add_schedule(db, "broken", settings)
    async with admin_site(db_url, **api_config(data)) as site:
        page = await site.signed_in("operator")
        await page.goto("/admin/schedules/broken")
        page.once("dialog", lambda dialog: dialog.accept())
        await page.click("button:has-text('Run now')")
        await page.wait_for_url("**/admin/schedules/broken?done=run*")
        error = await page.locator("p.error").inner_text()
        assert error.startswith("Run now: failed: attempt 1:") and "division by zero" in error
        [run] = await history(page)
        assert run[1:4] == ["manual", "failed", "1"] and "division by zero" in run[4]
        assert await scalar(db, "SELECT count(*) FROM events") == 0
        await site.check_page(page, "schedule-failed-run")

        # A schedule the config file declares is the file's: run, but not changed, here.
        await db.execute(
            "INSERT INTO schedules (name, cron, timezone, event_type, audience, source, origin)"
            " VALUES ('from-file', '0 9 * * 1', 'UTC', 'weekly_newsletter',"
            ' \'{"all": true}\', \'{"kind": "static", "data": {}}\', \'config\')'
        )
        await page.goto("/admin/schedules/from-file")
        assert "change it there" in (await facts(page))["Origin"]
        assert await page.locator("button:has-text('Run now')").count() == 1
        assert await page.locator("text=Edit").count() == 0
        assert await page.locator("button:has-text('Disable')").count() == 0
        forged = await page.request.post(
            "/admin/schedules/from-file/disable",
            form={"csrf": await page.locator("input[name=csrf]").first.input_value()},
        )
        assert forged.status == 409
        assert "declared in the config file" in await forged.text()
        assert await scalar(db, "SELECT enabled FROM schedules WHERE name = 'from-file'")
        missing = await page.goto("/admin/schedules/nope")
        assert missing is not None and missing.status == 404
    cur = await db.execute(
        "SELECT action, after FROM audit_log WHERE actor = 'operator' ORDER BY id"
    )
    rows = await cur.fetchall()
    # The refused disable of the file's schedule is on record too, with why.
    assert [r[0] for r in rows] == ["login", "schedule.run", "refused"]
    assert rows[1][1]["outcome"] == "failed"
    assert "declared in the config file" in rows[2][1]["why"]
