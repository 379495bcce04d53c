"""The preference center in Chromium with JavaScript off, from a real email: the API and a
dispatcher on loopback send the email to a real SMTP server; the link in it opens the
page, a category's email is switched off and stays off, the API agrees and the next
notification of that category is not emailed. A forged and an expired link are refused
with a page that says so."""

from __future__ import annotations

import html
import re
import shutil
import time
from typing import Any

import httpx
import psycopg
from playwright.async_api import Browser, Page, async_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from service.app import create_app
from service.config.base import ROOT
from service.config.load import Config, parse_config
from service.notify.preference_center import make_token
from tests.admin_browser import CHROMIUM, CHROMIUM_ARGS, FIT_CHECK, need_chromium
from tests.consumers import running, wait_until
from tests.notify_api import auth, new_key
from tests.smtp_server import smtp_server
from tests.support import config_data, notify_data, serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
EPISODE = {"series": "Dark", "episode": 3, "title": "Past and Present", "url": "https://x/e3"}
SCREENSHOTS = ROOT / "test-output" / "preference-center"


def make_config(db_url: str, smtp_port: int, public_url: str) -> Config:
    data = config_data(db_url, **notify_data(smtp_port=smtp_port, public_url=public_url))
    # Email is the channel under test; the SMS and push providers are not running.
    for name in ("sms", "push"):
        data["channels"][name]["enabled"] = False
    data["categories"]["content"]["description"] = "New episodes"
    data["categories"]["account"]["description"] = "Your account"
    return parse_config(data, "test-config")


async def no_script_page(browser: Browser, width: int = 1280) -> Page:
    context = await browser.new_context(
        java_script_enabled=False, viewport={"width": width, "height": 900}
    )
    return await context.new_page()


async def post_event(http: httpx.AsyncClient, key: dict[str, str], n: int) -> str:
    body = {
        "type": "new_episode",
        "idempotency_key": f"dark-s1e{n}",
        "recipients": {"user_ids": ["anna"]},
        "data": EPISODE | {"episode": n},
    }
    answer = await http.post("/v1/events", json=body, headers=key)
    assert answer.status_code == 202, answer.text
    event_id: str = answer.json()["id"]
    return event_id


async def switch_email_off(browser: Browser, link: str) -> None:
    """Open the link, check what it shows, switch the content's email off and save."""
    page = await no_script_page(browser)
    opened = await page.goto(link)
    assert opened is not None and opened.status == 200
    assert await page.title() == "Notification preferences"
    email = page.get_by_role("group", name="New episodes").get_by_role("checkbox", name="Email")
    assert await email.is_checked()
    # The transactional category: shown, every box on and locked, and why.
    account = page.get_by_role("group", name="Your account")
    boxes = account.get_by_role("checkbox")
    assert await boxes.count() == 4
    for n in range(4):
        assert await boxes.nth(n).is_checked()
        assert await boxes.nth(n).is_disabled()
    assert "cannot be switched off" in await account.inner_text()

    await email.uncheck()
    await page.get_by_role("button", name="Save").click()
    await page.wait_for_load_state()
    assert page.url == f"{link}?saved=1"
    saved = "Saved. Your preferences are up to date."
    assert await page.get_by_role("status").inner_text() == saved
    # Opened again, the link shows the box off.
    await page.goto(link)
    email = page.get_by_role("group", name="New episodes").get_by_role("checkbox", name="Email")
    assert not await email.is_checked()
    assert await page.get_by_role("status").count() == 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        await page.set_viewport_size({"width": width, "height": 900})
        await page.screenshot(path=SCREENSHOTS / f"page-{width}.png", full_page=True)
    await page.context.close()


async def refused(browser: Browser, url: str) -> None:
    page = await no_script_page(browser)
    answer = await page.goto(url)
    assert answer is not None and answer.status == 400
    assert await page.get_by_role("heading").inner_text() == "This link does not work"
    assert await page.locator("form").count() == 0
    await page.context.close()


async def cross_site_post(browser: Browser, link: str, form_token: str) -> None:
    """Another site's page that knows the link and even a form token of its page: its
    form, submitted by the user, writes nothing."""
    fields = {"form_token": form_token, "on/content/inbox": "off", "action": "save"}
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in fields.items()
    )
    form = f'<form method="post" action="{html.escape(link)}">{inputs}<button>Win</button></form>'

    async def attacker(request: Request) -> Response:
        return HTMLResponse(f"<!doctype html><title>Prize</title>{form}")

    async with serve(Starlette(routes=[Route("/", attacker)])) as evil:
        page = await no_script_page(browser)
        # localhost, not 127.0.0.1: another site, as a browser counts sites.
        await page.goto(evil.replace("127.0.0.1", "localhost"))
        async with page.expect_navigation() as navigation:
            await page.get_by_role("button", name="Win").click()
        answer = await navigation.value
        assert answer is not None and answer.status == 403
        assert "Nothing was saved" in await page.content()
        await page.context.close()


async def fit_problems(browser: Browser, link: str) -> list[str]:
    """What keeps the page from fitting a phone (tests/admin_browser.py's check, which
    needs script: a context of its own)."""
    context = await browser.new_context(viewport={"width": 390, "height": 900})
    page = await context.new_page()
    await page.goto(link)
    problems: list[str] = await page.evaluate(FIT_CHECK)
    await context.close()
    return problems


async def test_a_link_from_a_real_email_changes_preferences_without_javascript(
    db_url: str, db: Conn
) -> None:
    need_chromium()
    key = auth(new_key(db_url))
    async with smtp_server() as smtp:
        config = make_config(db_url, smtp.port, "http://127.0.0.1:9")
        async with (
            serve(create_app(config)) as base,
            httpx.AsyncClient(base_url=base, timeout=30) as http,
            # The dispatcher writes links to this API, wherever it listens.
            running(make_config(db_url, smtp.port, base), db_url),
            async_playwright() as playwright,
        ):
            user = {"email": "anna@example.com", "locale": "en"}
            assert (await http.put("/v1/users/anna", json=user, headers=key)).status_code == 201
            await post_event(http, key, 3)
            [mail] = await smtp.wait_for(1)
            html_part = mail.message.get_body(("html",))
            assert html_part is not None
            found = re.search(
                r'<a href="([^"]+)">Manage notifications</a>', html_part.get_content()
            )
            assert found is not None and found[1].startswith(f"{base}/v1/preferences/manage/")
            link = found[1]

            browser = await playwright.chromium.launch(
                executable_path=shutil.which("chromium") or CHROMIUM, args=CHROMIUM_ARGS
            )
            try:
                await switch_email_off(browser, link)
                # Forged (another user's claims under Anna's signature) and expired links.
                header, _, signature = link.rsplit("/", 1)[1].split(".")
                ben = make_token(config.notify, "ben").split(".")[1]
                ttl = config.notify.preferences_link_ttl.total_seconds()
                expired = make_token(config.notify, "anna", now=time.time() - ttl - 60)
                for bad in (f"{header}.{ben}.{signature}", expired):
                    await refused(browser, f"{base}/v1/preferences/manage/{bad}")
                page = (await http.get(link)).text
                token = re.search(r'name="form_token" value="([^"]+)"', page)
                assert token is not None
                await cross_site_post(browser, link, token[1])
                assert await fit_problems(browser, link) == []
            finally:
                await browser.close()

            answer = await http.get("/v1/users/anna/preferences", headers=key)
            assert answer.json()["categories"]["content"] == {
                "email": False,
                "inbox": True,
                "sms": False,
                "push": True,
            }

            # The next episode reaches Anna's inbox, and is not emailed.
            event_id = await post_event(http, key, 4)

            async def delivered() -> bool:
                cur = await db.execute(
                    "SELECT n.suppressed, array_agg(o.consumer || ':' || o.status)"
                    " FROM notifications n JOIN outbox o ON o.notification_id = n.id"
                    " WHERE n.event_id = %s GROUP BY n.suppressed",
                    (event_id,),
                )
                row = await cur.fetchone()
                return row == ({"email": "preference"}, ["inbox:delivered"])

            await wait_until(delivered, 10, "the next episode in the inbox only")
            assert len(smtp.mails) == 1
