"""Mailings in Chromium, as a manager makes them: write, preview, see the audience size,
send, watch the recipients get it (a real dispatcher, SMTP server and push provider) and
the progress reach 100 %; a double send sends once; a scheduled mailing is cancelled
and never sent; every action has its audit row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from playwright.async_api import Dialog, FilePayload, Page

from tests.admin_browser import AdminSite, admin_site
from tests.consumers import running, wait_until
from tests.providers import Providers, serving_providers
from tests.smtp_server import SmtpServer, smtp_server
from tests.support import bearer, client_token, make_config, notify_data

# On the Citus cluster too (`pytest --citus`).
pytestmark = pytest.mark.citus

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

SCRIPT = "<script>alert(1)</script>"
CURLY = "{{ 7*7 }}"


@dataclass
class World:
    site: AdminSite
    smtp: SmtpServer
    providers: Providers
    db: Conn


@asynccontextmanager
async def world(db_url: str, db: Conn) -> AsyncIterator[World]:
    """The admin site and a dispatcher that delivers to a local SMTP server and providers."""
    async with smtp_server() as smtp, serving_providers() as (providers, base):
        overrides: dict[str, Any] = {
            "channels": notify_data(smtp_port=smtp.port, providers_url=base)["channels"],
            "dispatcher": {"sweep_interval": 0.2},
        }
        async with (
            admin_site(db_url, **overrides) as site,
            running(make_config(db_url, **overrides), db_url),
        ):
            yield World(site, smtp, providers, db)


async def add_user(
    db: Conn, user_id: str, *, locale: str | None = None, device: bool = True, topic: str = ""
) -> None:
    await db.execute(
        "INSERT INTO users (id, email, phone, locale) VALUES (%s, %s, %s, %s)",
        (user_id, f"{user_id}@example.com", "+4915112345678", locale),
    )
    if device:
        await db.execute(
            "INSERT INTO push_devices (user_id, token, platform) VALUES (%s, %s, 'ios')",
            (user_id, f"tok-{user_id}"),
        )
    if topic:
        await db.execute(
            "INSERT INTO user_topics (topic, user_id) VALUES (%s, %s)", (topic, user_id)
        )


def csv_file(content: bytes) -> FilePayload:
    return {"name": "ids.csv", "mimeType": "text/csv", "buffer": content}


async def accept_dialogs(dialog: Dialog) -> None:
    await dialog.accept()


async def new_mailing(page: Page, type_label: str | None = None) -> None:
    await page.goto("/admin/mailings")
    await page.click("text=New mailing")
    if type_label:
        await page.click(f"nav.mailing-kinds >> text={type_label}")
    await page.wait_for_load_state()


async def fill_texts(page: Page, locale: str, word: str) -> None:
    for part in ("email_subject", "push_title", "inbox_title"):
        await page.fill(f"[name='text.{locale}.{part}']", f"{word} {CURLY}")
    for part in ("email_body", "push_body", "inbox_body"):
        await page.fill(f"[name='text.{locale}.{part}']", f"{word} body {SCRIPT}\n{CURLY}")


def mailing_id_of(page: Page) -> int:
    return int(page.url.split("/admin/mailings/")[1].split("?")[0].split("/")[0])


async def audit_rows(db: Conn) -> list[tuple[str, str | None, Any]]:
    cur = await db.execute(
        "SELECT action, target, after FROM audit_log WHERE actor = 'manager'"
        " AND action LIKE 'mailing.%' ORDER BY id"
    )
    return list(await cur.fetchall())


async def percent_shown(page: Page) -> str:
    return await page.locator(".mailing-percent").inner_text()


async def test_a_one_off_mailing_to_a_topic_is_previewed_sent_and_followed_to_100_percent(
    db_url: str, db: Conn
) -> None:
    async with world(db_url, db) as w:
        await add_user(db, "anna", locale="ru", topic="launch")
        await add_user(db, "ben", locale="en", topic="launch")
        await add_user(db, "cleo", device=False, topic="launch")
        await add_user(db, "dora")  # not in the topic
        page = await w.site.signed_in("manager")
        page.on("dialog", accept_dialogs)
        await page.goto("/admin/mailings")
        assert "No mailings yet" in await page.locator("table.data").inner_text()
        await w.site.check_page(page, "mailings-list-empty")

        await new_mailing(page)
        await w.site.check_page(page, "mailings-new")
        await page.fill("[name=name]", "Launch news")
        await fill_texts(page, "en", "Hello")
        await fill_texts(page, "ru", "Привет")
        await page.fill("[name=link]", "https://example.com/launch")
        await page.check("input[name=audience][value=topic]")
        await page.fill("[name=topic]", "launch")
        await page.click("button:has-text('Save draft')")
        await page.wait_for_load_state()
        mailing_id = mailing_id_of(page)
        assert await page.locator("#mailing-status").inner_text() == "draft"
        assert await page.locator("#audience-size").inner_text() == "3"  # not dora
        await w.site.check_page(page, "mailings-detail-draft")

        # The preview for Anna is in her language, the texts exactly as written.
        await page.fill("section >> [name=user]", "anna")
        await page.click("section >> button:has-text('Preview')")
        await page.wait_for_load_state()
        assert "/preview" in page.url
        email = page.locator("section[data-channel=email]")
        assert await email.locator(".preview-subject").inner_text() == f"Привет {CURLY}"
        text = await email.locator(".preview-text").inner_text()
        assert f"Привет body {SCRIPT}\n{CURLY}" in text
        assert "Отписаться" in text
        frame = page.frame_locator("iframe.mailing-html")
        assert SCRIPT in await frame.locator("p").first.inner_text()  # shown, as text
        push = page.locator("section[data-channel=push]")
        assert await push.locator(".preview-title").inner_text() == f"Привет {CURLY}"
        await w.site.check_page(page, "mailings-preview")
        # Another locale, for a user the service does not know.
        await page.fill("[name=user]", "zed")
        await page.select_option("[name=locale]", "en")
        await page.click("button:has-text('Preview')")
        await page.wait_for_load_state()
        assert "zed is not a known user" in await page.locator(".notice").inner_text()
        inbox = page.locator("section[data-channel=inbox]")
        assert await inbox.locator(".preview-title").inner_text() == f"Hello {CURLY}"

        await page.goto(f"/admin/mailings/{mailing_id}")
        await page.click("#send")
        await page.wait_for_load_state()
        assert "Sent" in await page.locator(".notice").inner_text()
        assert await page.locator("#mailing-status").inner_text() == "sent"

        mails = await w.smtp.wait_for(3, within=20)
        by_rcpt = {m.rcpt_tos[0]: m.message for m in mails}
        assert set(by_rcpt) == {"anna@example.com", "ben@example.com", "cleo@example.com"}
        ben = by_rcpt["ben@example.com"]
        assert ben["Subject"] == f"Hello {CURLY}"
        plain = ben.get_body(("plain",))
        html = ben.get_body(("html",))
        assert plain is not None
        assert f"Hello body {SCRIPT}\r\n{CURLY}" in plain.get_content()  # CRLF on the wire
        assert html is not None
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html.get_content()
        assert "<script>" not in html.get_content()
        assert ben["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert by_rcpt["anna@example.com"]["Subject"] == f"Привет {CURLY}"

        async def pushed() -> bool:
            return len(w.providers.to("push-primary")) >= 2

        await wait_until(pushed, 20, "two pushes")
        pushes = {s.body["token"]: s.body for s in w.providers.to("push-primary")}
        assert set(pushes) == {"tok-anna", "tok-ben"}  # Cleo has no device
        assert pushes["tok-ben"]["title"] == f"Hello {CURLY}"
        async with httpx.AsyncClient(base_url=w.site.base) as api:
            for user, title in (("ben", "Hello"), ("anna", "Привет")):

                async def listed(user: str = user) -> bool:
                    inbox = await api.get("/v1/inbox", headers=bearer(client_token(user)))
                    return len(inbox.json()["items"]) == 1

                await wait_until(listed, 20, f"{user}'s inbox item")
                inbox_page = await api.get("/v1/inbox", headers=bearer(client_token(user)))
                assert inbox_page.json()["items"][0]["title"] == f"{title} {CURLY}"

        # The page follows along without a reload, to the end.
        async def complete() -> bool:
            return "100 %" in await percent_shown(page)

        await wait_until(complete, 20, "the progress to reach 100 %", step=0.5)
        counts = page.locator("tr[data-channel=email] td")
        assert [await counts.nth(n).inner_text() for n in range(3)] == ["email", "0", "3"]
        push_row = await page.locator("tr[data-channel=push]").inner_text()
        assert "no_contact 1" in push_row
        await page.reload()
        assert await page.locator(".mailing-percent").inner_text() == "100 % done"
        assert not await page.locator("#cancel").count()  # nothing left to cancel
        await w.site.check_page(page, "mailings-detail-sent")

        await page.goto("/admin/mailings")
        row = await page.locator("tbody tr").first.inner_text()
        assert "Launch news" in row and "topic launch" in row and "100 %" in row
        await w.site.check_page(page, "mailings-list")

    cur = await db.execute(
        "SELECT count(*), min(producer), min(idempotency_key) FROM events WHERE producer = 'admin'"
    )
    assert await cur.fetchone() == (1, "admin", f"mailing:{mailing_id}")
    actions = [(a, t) for a, t, _ in await audit_rows(db)]
    assert actions == [
        ("mailing.create", f"mailing:{mailing_id}"),
        ("mailing.send", f"mailing:{mailing_id}"),
    ]


async def test_a_list_mailing_sends_once_and_a_scheduled_one_is_cancelled(
    db_url: str, db: Conn
) -> None:
    async with world(db_url, db) as w:
        await add_user(db, "ben", locale="en")
        await add_user(db, "eve", locale="en")
        page = await w.site.signed_in("manager")
        page.on("dialog", accept_dialogs)

        # An event type's mailing to the users of an uploaded file.
        await new_mailing(page, "new_episode")
        await page.fill("[name=name]", "Dark, episode 4")
        for field, value in (("series", "Dark"), ("episode", "4"), ("title", "Lost")):
            await page.fill(f"[name='data.{field}']", value)
        await page.fill("[name='data.url']", "https://example.com/dark/4")
        await page.check("input[name=audience][value=users]")
        bad = b"user_id,note\nben,x\nnot/an/id,y\n,z\n"
        await page.set_input_files(
            "[name=audience_file]",
            files=csv_file(bad),
        )
        await page.click("button:has-text('Save draft')")
        await page.wait_for_load_state()
        error = await page.locator(".error").inner_text()
        assert "2 bad line(s)" in error and "line 3" in error and "line 4" in error
        assert await page.input_value("[name='data.title']") == "Lost"  # kept for the fix
        good = b"ben\nghost\nben\neve\n"
        await page.set_input_files(
            "[name=audience_file]",
            files=csv_file(good),
        )
        await page.click("button:has-text('Save draft')")
        await page.wait_for_load_state()
        list_id = mailing_id_of(page)
        assert await page.locator("#audience-size").inner_text() == "2"
        assert (
            "1 of the 3 listed ids are not known users"
            in await page.locator("dl.facts").first.inner_text()
        )

        await page.click("text=Edit")
        await page.wait_for_load_state()
        await w.site.check_page(page, "mailings-edit")
        await page.fill("[name=name]", "Dark, episode 4 (all)")
        await page.click("button:has-text('Save draft')")
        await page.wait_for_load_state()
        assert "Dark, episode 4 (all)" in await page.locator("h1").inner_text()
        assert await page.locator("#audience-size").inner_text() == "2"  # the file was kept

        # Two sends at once, as a double click or a resent form would make them.
        csrf = await page.input_value("form[action$='/send'] [name=csrf]")
        sends = await asyncio.gather(
            *(
                page.request.post(f"/admin/mailings/{list_id}/send", form={"csrf": csrf})
                for _ in range(2)
            )
        )
        assert [r.status for r in sends] == [200, 200]
        mails = await w.smtp.wait_for(2, within=20)
        assert sorted(m.rcpt_tos[0] for m in mails) == ["ben@example.com", "eve@example.com"]
        cur = await db.execute(
            "SELECT idempotency_key FROM events WHERE producer = 'admin' ORDER BY created_at"
        )
        assert await cur.fetchall() == [(f"mailing:{list_id}",)]

        # A mailing for an hour from now, cancelled before it goes.
        await new_mailing(page)
        await page.fill("[name=name]", "Tomorrow's news")
        await fill_texts(page, "en", "Later")
        await page.check("input[name=audience][value=all]")
        later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        await page.fill("[name=send_at]", later)
        await page.click("button:has-text('Save draft')")
        await page.wait_for_load_state()
        scheduled_id = mailing_id_of(page)
        await page.click("#send")  # "Schedule"
        await page.wait_for_load_state()
        assert "Scheduled" in await page.locator(".notice").inner_text()
        cur = await db.execute(
            "SELECT e.id, e.status, j.scheduled_at IS NOT NULL FROM events AS e"
            " JOIN procrastinate_jobs AS j ON j.queueing_lock = 'materialize:' || e.id"
            " WHERE e.idempotency_key = %s",
            (f"mailing:{scheduled_id}",),
        )
        scheduled = await cur.fetchone()
        assert scheduled is not None and scheduled[1:] == ("scheduled", True)
        await w.site.check_page(page, "mailings-detail-scheduled")
        await page.click("#cancel")
        await page.wait_for_load_state()
        assert "Cancelled" in await page.locator(".notice").inner_text()
        assert await page.locator("#mailing-status").inner_text() == "cancelled"
        cur = await db.execute(
            "SELECT e.status, (SELECT count(*) FROM procrastinate_jobs AS j"
            "                  WHERE j.queueing_lock = 'materialize:' || e.id)"
            " FROM events AS e WHERE e.id = %s",
            (scheduled[0],),
        )
        assert await cur.fetchone() == ("cancelled", 0)
        # A statement of its own: on Citus a distributed table joins no coordinator table.
        cur = await db.execute(
            "SELECT count(*) FROM notifications WHERE event_id = %s", (scheduled[0],)
        )
        assert await cur.fetchone() == (0,)
        await asyncio.sleep(1.0)  # the dispatcher would have had time to send it
        assert len(w.smtp.mails) == 2
        await page.goto("/admin/mailings")
        statuses = await page.locator("tbody .badge").all_inner_texts()
        assert statuses == ["cancelled", "sent"]

    rows = await audit_rows(db)
    assert [(a, t) for a, t, _ in rows] == [
        ("mailing.create", f"mailing:{list_id}"),
        ("mailing.update", f"mailing:{list_id}"),
        ("mailing.send", f"mailing:{list_id}"),
        ("mailing.create", f"mailing:{scheduled_id}"),
        ("mailing.send", f"mailing:{scheduled_id}"),
        ("mailing.cancel", f"mailing:{scheduled_id}"),
    ]
    assert rows[0][2]["user_ids"] == 3 and rows[0][2]["audience"] == "users"
    assert rows[-1][2]["event_status_before"] == "scheduled"
    assert rows[-1][2]["job_removed"] is True
