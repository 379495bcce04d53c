"""The screenshots of docs/admin.md, made from a real walk: the dashboard with trouble, a
dead letter's page, a mailing in progress and the audit log, each at 1280 and 390 px.

Run as a test it checks what each picture must show and writes them under
test-output/admin/docs/. To regenerate the pictures in docs/img/admin/:

    ADMIN_SCREENSHOTS=docs .venv/bin/python -m pytest -q tests/e2e/test_admin_screenshots.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
from playwright.async_api import Page

from service.config.base import ROOT
from tests.admin_browser import SCREENSHOTS, WIDTHS, AdminSite, admin_site
from tests.consumers import scalar
from tests.e2e.test_admin_charts import delivered_attempt
from tests.e2e.test_admin_deliveries import dead_notification
from tests.e2e.test_admin_mailings import accept_dialogs, csv_file, new_mailing

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
DOCS = ROOT / "docs" / "img" / "admin"
HEIGHTS = {1280: 800, 390: 844}
MAX_BYTES = 200_000
TEXTS = {
    "email_subject": "Spring is here",
    "email_body": "The spring collection is out: twelve new pieces, all made to last.",
    "push_title": "Spring is here",
    "push_body": "Twelve new pieces, out now.",
    "inbox_title": "Spring is here",
    "inbox_body": "The spring collection is out.",
}
USERS = ("ada", "ben", "cleo", "dan", "eve", "fay")


def target() -> Path:
    return DOCS if os.environ.get("ADMIN_SCREENSHOTS") == "docs" else SCREENSHOTS / "docs"


async def shoot(site: AdminSite, page: Page, name: str) -> None:
    """The whole page at each width."""
    folder = target()
    folder.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": HEIGHTS[width]})
        await page.reload()
        await page.wait_for_load_state("networkidle")
        path = folder / f"{name}-{width}.png"
        await page.screenshot(path=path, full_page=True, animations="disabled", caret="hide")
        assert path.stat().st_size < MAX_BYTES, (path, path.stat().st_size)
    await site.check_page(page, f"docs-{name}")


async def test_the_docs_screenshots(db_url: str, db: Conn) -> None:
    for user in USERS:
        await db.execute(
            "INSERT INTO users (id, email) VALUES (%s, %s)", (user, f"{user}@example.com")
        )
    async with admin_site(db_url) as site:
        page = await site.signed_in("operator")
        page.on("dialog", accept_dialogs)

        # A mailing to six users, sent, with four of its emails out (no dispatcher runs:
        # the rest stay queued).
        await new_mailing(page)
        await page.fill("[name=name]", "Spring launch")
        for part, text in TEXTS.items():
            await page.fill(f"[name='text.en.{part}']", text)
        await page.check("input[name=audience][value=users]")
        await page.set_input_files(
            "[name=audience_file]", files=csv_file("\n".join(USERS).encode())
        )
        await page.click("button:has-text('Save draft')")
        await page.wait_for_load_state()
        mailing_url = page.url.split("?")[0]
        await page.click("#send")
        await page.wait_for_load_state()
        await db.execute(
            "UPDATE outbox SET status = 'delivered', attempts = 1, delivered_at = now()"
            " WHERE consumer = 'email' AND ordering_key IN ('ada', 'ben', 'cleo', 'dan')"
        )
        await db.execute(
            "UPDATE outbox SET status = 'delivered', attempts = 1, delivered_at = now()"
            " WHERE consumer = 'inbox'"
        )

        # Trouble: SMS dead letters, and a refused push.
        dead = await dead_notification(db, "ada", "invoice_paid", "sms")
        await dead_notification(db, "ben", "invoice_paid", "sms")
        await delivered_attempt(db)
        await db.execute(
            "UPDATE outbox SET status = 'failed', attempts = 1, last_error = %s"
            " WHERE consumer = 'push' AND ordering_key = 'eve'",
            ["HTTP 410 from push-primary: the device token is no longer registered"],
        )

        await page.goto("/admin/")
        assert await page.locator("#stat-dead strong").inner_text() != "0"
        await shoot(site, page, "dashboard")

        await page.goto(f"/admin/deliveries/{dead}")
        assert "HTTP 503 from sms-fallback" in await page.locator("#attempts").inner_text()
        await shoot(site, page, "delivery")

        await page.goto(mailing_url)
        percent = await page.locator(".mailing-percent").inner_text()
        assert percent not in ("0 % done", "100 % done"), percent
        await shoot(site, page, "mailing")

        await page.goto("/admin/audit")
        assert await scalar(db, "SELECT count(*) FROM audit_log WHERE action LIKE 'mailing.%'")
        await shoot(site, page, "audit")
