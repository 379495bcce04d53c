"""The preference center against the real API and database, over plain HTTP (the browser's
view: tests/e2e/test_preference_center.py): the link of a delivered email, the page, a
save through PUT's rule, and every refusal writing nothing."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg

from service.app import create_app
from service.config.load import Config, parse_config
from service.notify import preference_form
from service.notify.catalog import sync_catalog
from service.notify.preference_center import make_token
from service.notify.templates import load_templates
from service.notify.unsubscribe import make_token as unsubscribe_token
from service.sql import q
from tests.consumers import running
from tests.notify_api import assert_error, auth, new_key
from tests.smtp_server import smtp_server
from tests.support import config_data, notify_data, serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

EPISODE = {"series": "Dark", "episode": 3, "title": "Past and Present", "url": "https://x/e3"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Accept": "application/json"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def make_config(
    db_url: str, *, smtp_port: int = 9, public_url: str = "http://127.0.0.1:9"
) -> Config:
    data = config_data(db_url, **notify_data(smtp_port=smtp_port, public_url=public_url))
    for name in ("sms", "push"):
        data["channels"][name]["enabled"] = False
    data["categories"]["content"] |= {
        "description": "New episodes of <your> series",
        "labels": {"ru": "Новые серии"},
    }
    return parse_config(data, "test-config")


@dataclass
class Api:
    http: httpx.AsyncClient
    config: Config
    key: dict[str, str]


@asynccontextmanager
async def api(db: Conn, db_url: str) -> AsyncIterator[Api]:
    config = make_config(db_url)
    await sync_catalog(db, config, load_templates(config))
    async with serve(create_app(config)) as base, httpx.AsyncClient(base_url=base) as http:
        yield Api(http, config, auth(new_key(db_url)))


async def add_user(
    db: Conn, user_id: str, locale: str | None = None, tz: str | None = None
) -> None:
    await db.execute(
        "INSERT INTO users (id, email, locale, timezone) VALUES (%s, %s, %s, %s)",
        (user_id, f"{user_id}@x.test", locale, tz),
    )


async def stored(db: Conn) -> dict[str, tuple[bool, Any, Any]]:
    cur = await db.execute("SELECT user_id, muted, channels, quiet_hours FROM preferences")
    return {u: (m, c, qh) for u, m, c, qh in await cur.fetchall()}


def link(config: Config, user_id: str, **kwargs: Any) -> str:
    return "/v1/preferences/manage/" + make_token(config.notify, user_id, **kwargs)


@dataclass
class Input:
    type: str
    name: str | None
    value: str
    checked: bool
    disabled: bool


class Page(HTMLParser):
    """A page's forms as a browser sees them: each form's inputs in order, and its buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[list[Input]] = []
        self.buttons: list[list[tuple[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append([])
            self.buttons.append([])
        elif tag == "input":
            kind, name, value = a.get("type") or "text", a.get("name"), a.get("value") or ""
            self.forms[-1].append(Input(kind, name, value, "checked" in a, "disabled" in a))
        elif tag == "button" and a.get("name"):
            self.buttons[-1].append((a.get("name") or "", a.get("value") or ""))

    def boxes(self) -> dict[str, bool]:
        """The category boxes of the first form that can be changed: checked or not."""
        return {
            i.name: i.checked
            for i in self.forms[0]
            if i.type == "checkbox" and i.name and i.name.startswith("on/")
        }

    def submit(self, changes: dict[str, bool | str] | None = None, form: int = 0) -> str:
        """The body a browser posts: hidden and time inputs, the checked boxes, the first
        button; `changes` sets boxes (True/False) and times by field name."""
        changes = changes or {}
        fields = []
        for i in self.forms[form]:
            if i.disabled or not i.name:
                continue
            if i.type == "checkbox":
                if changes.get(i.name, i.checked):
                    fields.append((i.name, i.value))
            elif i.type == "time":
                fields.append((i.name, str(changes.get(i.name, i.value))))
            else:
                fields.append((i.name, i.value))
        return urlencode(fields + self.buttons[form][:1])


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


async def open_page(http: httpx.AsyncClient, url: str) -> tuple[httpx.Response, Page]:
    response = await http.get(url, headers=BROWSER)
    assert response.status_code == 200, response.text
    return response, parse(response.text)


def assert_page_headers(response: httpx.Response, *, page: bool = True) -> None:
    headers = response.headers
    assert headers.get("content-type", "").startswith("text/html") is page
    csp = headers["content-security-policy"]
    for rule in ("default-src 'none'", "frame-ancestors 'none'", "form-action 'self'"):
        assert rule in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-robots-tag"] == "noindex"


async def accept(db: Conn, user_ids: list[str]) -> str:
    cur = await db.execute(
        q("accept_event"),
        {
            "producer": "content",
            "idempotency_key": str(uuid.uuid4()),
            "type": "new_episode",
            "recipients": json.dumps({"user_ids": user_ids}),
            "data": json.dumps(EPISODE),
            "send_at": None,
            "chunk": 1000,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def test_the_link_of_a_delivered_email_opens_the_page_and_a_change_sticks(
    db: Conn, db_url: str
) -> None:
    async with api(db, db_url) as (a), smtp_server() as server:
        base = str(a.http.base_url).rstrip("/")
        config = make_config(db_url, smtp_port=server.port, public_url=base)
        await add_user(db, "anna")
        await db.execute(
            "INSERT INTO preferences (user_id, channels) VALUES ('anna', %s)",
            (json.dumps({"social": {"push": True}}),),
        )
        await accept(db, ["anna"])
        async with running(config, db_url):
            [mail] = await server.wait_for(1)
        text = mail.message.get_body(("plain",))
        assert text is not None
        found = re.search(r"Manage notifications: (\S+)", text.get_content())
        assert found is not None and found[1].startswith(f"{base}/v1/preferences/manage/")

        response, page = await open_page(a.http, found[1])
        assert_page_headers(response)
        assert "<script" not in response.text
        assert "New episodes of &lt;your&gt; series" in response.text
        api_view = (await a.http.get("/v1/users/anna/preferences", headers=a.key)).json()
        # The page shows what the API says, box for box; transactional boxes are locked on.
        shown = page.boxes()
        assert shown == {
            f"on/{c}/{ch}": on
            for c, channels in api_view["categories"].items()
            if c not in api_view["transactional"]
            for ch, on in channels.items()
        }
        locked = [i for i in page.forms[0] if i.disabled]
        assert len(locked) == 2 * len(config.channels)
        assert all(i.checked and i.type == "checkbox" and i.name is None for i in locked)
        assert "Always on" in response.text

        saved = await a.http.post(
            found[1], headers=FORM, content=page.submit({"on/content/email": False})
        )
        assert saved.status_code == 303
        assert saved.headers["location"] == "?saved=1"
        assert_page_headers(saved, page=False)
        after, again = await open_page(a.http, f"{found[1]}?saved=1")
        assert "Saved." in after.text
        assert again.boxes() == shown | {"on/content/email": False}
        api_view = (await a.http.get("/v1/users/anna/preferences", headers=a.key)).json()
        assert api_view["categories"]["content"]["email"] is False
        # Only the box that changed became a switch; Anna's own switch is kept.
        assert await stored(db) == {
            "anna": (False, {"social": {"push": True}, "content": {"email": False}}, {})
        }

    # The next episode reaches Anna, but not by email.
    event_id = await accept(db, ["anna"])
    cur = await db.execute(
        "SELECT n.suppressed, array_agg(o.consumer ORDER BY o.consumer)"
        " FROM notifications n LEFT JOIN outbox o ON o.notification_id = n.id"
        " WHERE n.event_id = %s GROUP BY n.suppressed",
        (event_id,),
    )
    assert await cur.fetchall() == [({"email": "preference"}, ["inbox"])]


async def test_forged_foreign_or_expired_links_are_refused_and_write_nothing(
    db: Conn, db_url: str
) -> None:
    async with api(db, db_url) as a:
        await add_user(db, "anna")
        good = link(a.config, "anna").rsplit("/", 1)[1]
        header, _, signature = good.split(".")
        ben = make_token(a.config.notify, "ben").split(".")[1]
        ttl = a.config.notify.preferences_link_ttl.total_seconds()
        refused = {
            "forged": f"{header}.{ben}.{signature}",
            "expired": make_token(a.config.notify, "anna", now=time.time() - ttl - 60),
            "an unsubscribe link's": unsubscribe_token(a.config.notify, "anna", "content"),
            "not a token": "hello",
        }
        _, page = await open_page(a.http, link(a.config, "anna"))
        body = page.submit({"on/content/email": False})
        for what, token in refused.items():
            url = f"/v1/preferences/manage/{token}"
            for method in ("GET", "POST"):
                answer = await a.http.request(method, url, headers=JSON | FORM, content=body)
                assert_error(answer, 400, "invalid_preferences_link")
                page_answer = await a.http.request(
                    method, url, headers=BROWSER | FORM, content=body
                )
                assert page_answer.status_code == 400, what
                assert_page_headers(page_answer)
                assert "This link does not work" in page_answer.text, what
                assert "Back to your preferences" not in page_answer.text
        expired = await a.http.get(f"/v1/preferences/manage/{refused['expired']}", headers=JSON)
        assert "expired" in expired.json()["message"]
        assert await stored(db) == {}


async def test_a_post_needs_the_form_token_of_its_own_page_and_no_other_site(
    db: Conn, db_url: str
) -> None:
    async with api(db, db_url) as a:
        await add_user(db, "anna")
        await add_user(db, "ben")
        url = link(a.config, "anna")
        _, page = await open_page(a.http, url)
        _, bens = await open_page(a.http, link(a.config, "ben"))
        off: dict[str, bool | str] = {"on/content/email": False}
        body = page.submit(off)
        token = next(i.value for i in page.forms[0] if i.name == "form_token")
        anna_token = url.rsplit("/", 1)[1]
        stale = preference_form.form_token(
            a.config.notify,
            anna_token,
            environment="test",
            now=time.time() - preference_form.FORM_TTL.total_seconds() - 60,
        )
        refusals = {
            "no form token": body.replace(f"form_token={token}&", ""),
            "a tampered one": body.replace(f"form_token={token}", f"form_token={token[:-4]}AAAA"),
            "another link's page's": bens.submit(off),
            "an expired one": body.replace(f"form_token={token}", f"form_token={stale}"),
        }
        for what, sent in refusals.items():
            answer = await a.http.post(url, headers=FORM | JSON, content=sent)
            assert_error(answer, 403, "invalid_preferences_form")
            page_answer = await a.http.post(url, headers=FORM | BROWSER, content=sent)
            assert page_answer.status_code == 403, what
            assert "Reload the page" in page_answer.text
            assert '<a href="">Back to your preferences</a>' in page_answer.text
        for headers in (
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site", "Origin": "https://x.127.0.0.1"},
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
        ):
            answer = await a.http.post(url, headers=FORM | JSON | headers, content=body)
            assert_error(answer, 403, "invalid_preferences_form")
            assert "another site" in answer.json()["message"]
        answer = await a.http.post(
            url, headers={"Content-Type": "application/json"} | JSON, content=b"{}"
        )
        assert_error(answer, 415, "unsupported_media_type")
        big = body + "&" + "&".join(["muted=on"] * 9000)
        assert_error(
            await a.http.post(url, headers=FORM | JSON, content=big), 413, "payload_too_large"
        )
        assert await stored(db) == {}

        # The page's own POST as a browser sends it: same-origin, Origin hidden by the
        # page's no-referrer policy.
        own = {"Sec-Fetch-Site": "same-origin", "Origin": "null"}
        answer = await a.http.post(url, headers=FORM | own, content=body)
        assert answer.status_code == 303, answer.text
        assert (await stored(db))["anna"][1] == {"content": {"email": False}}


async def test_what_put_refuses_the_form_cannot_do(db: Conn, db_url: str) -> None:
    async with api(db, db_url) as a:
        await add_user(db, "anna")
        url = link(a.config, "anna")
        _, page = await open_page(a.http, url)
        body = page.submit()
        crafted = {
            "transactional_category": body + "&on%2Faccount%2Femail=off",
            "unknown_category": body + "&on%2Fnope%2Femail=off",
            "unknown_channel": body + "&on%2Fcontent%2Ffax=off",
            "invalid_quiet_hours": body + "&quiet%2Femail%2Fstart=22%3A00",
            "invalid_body": body + "&colour=red",
        }
        for code, sent in crafted.items():
            assert_error(await a.http.post(url, headers=FORM | JSON, content=sent), 400, code)
            answer = await a.http.post(url, headers=FORM | BROWSER, content=sent)
            assert answer.status_code == 400
            assert "Nothing was saved" in answer.text
        same = await a.http.post(url, headers=FORM | BROWSER, content=crafted["invalid_body"])
        assert "&#39;colour&#39; is not a field" in same.text
        # The API's own PUT refuses the first just the same.
        put = {"categories": {"account": {"email": False}}}
        answer = await a.http.put("/v1/users/anna/preferences", headers=a.key, json=put)
        assert_error(answer, 400, "transactional_category")
        assert await stored(db) == {}


async def test_a_user_that_is_gone_gets_a_page_that_says_so(db: Conn, db_url: str) -> None:
    async with api(db, db_url) as a:
        url = link(a.config, "ghost")
        page = await a.http.get(url, headers=BROWSER | {"Accept-Language": "ru-RU,ru;q=0.9"})
        assert page.status_code == 404
        assert "Этого аккаунта больше нет" in page.text
        assert_error(await a.http.get(url, headers=JSON), 404, "unknown_user")
        await add_user(db, "ghost")
        _, form = await open_page(a.http, url)
        await db.execute("DELETE FROM users WHERE id = 'ghost'")
        answer = await a.http.post(url, headers=FORM | BROWSER, content=form.submit())
        assert answer.status_code == 404
        assert "This account no longer exists." in answer.text
        assert await stored(db) == {}


async def test_a_russian_user_sets_quiet_hours_pauses_and_stops_all_email(
    db: Conn, db_url: str
) -> None:
    async with api(db, db_url) as a:
        await add_user(db, "olga", locale="ru-RU", tz="Europe/Moscow")
        url = link(a.config, "olga")
        response, page = await open_page(a.http, url)
        text = response.text
        assert '<html lang="ru">' in text
        for words in ("Настройки уведомлений", "Новые серии", "Europe/Moscow", "Почта"):
            assert words in text
        times: dict[str, bool | str] = {
            "quiet/push/start": "22:00",
            "quiet/push/end": "07:30",
            "muted": True,
        }
        answer = await a.http.post(url, headers=FORM, content=page.submit(times))
        assert answer.status_code == 303, answer.text
        after, page = await open_page(a.http, url)
        assert 'name="quiet/push/start" value="22:00"' in after.text
        # The second form: every non-transactional email off, the rest as it was.
        assert page.buttons[1] == [("action", "no_email")]
        answer = await a.http.post(url, headers=FORM, content=page.submit(form=1))
        assert answer.status_code == 303, answer.text
        view = (await a.http.get("/v1/users/olga/preferences", headers=a.key)).json()
        assert view["muted"] is True
        assert view["quiet_hours"] == {"push": {"start": "22:00", "end": "07:30"}}
        assert {c: s["email"] for c, s in view["categories"].items()} == {
            "content": False,
            "social": False,
            "account": True,
            "billing": True,
        }
        assert await stored(db) == {
            "olga": (
                True,
                {"content": {"email": False}, "social": {"email": False}},
                {"push": {"start": "22:00", "end": "07:30"}},
            )
        }
        # Clearing both times removes the window.
        cleared = page.submit({"quiet/push/start": "", "quiet/push/end": ""})
        assert (await a.http.post(url, headers=FORM, content=cleared)).status_code == 303
        view = (await a.http.get("/v1/users/olga/preferences", headers=a.key)).json()
        assert view["quiet_hours"] == {}
