"""The `<mark-notify-inbox>` element in a real browser, as another site embeds it.

`inbox_stack(db_url, tmp_path)` runs, on loopback: a host app (in this process) whose
page loads the element's script from the API and hands it client JWTs through
`getToken`, as an app's own backend would; the API as a process of its own (uvicorn, as
bin/dev runs it) allowing the host's origin (`[api] cors_origins`), so every call the
element makes is a real cross-origin one; a dispatcher process, which delivers to the
inbox; and Debian's Chromium. The API can be stopped and started again mid-test.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tests.admin_browser import CHROMIUM, CHROMIUM_ARGS, need_chromium
from tests.chaos_support import Process, api_process, dispatcher_process, service_env
from tests.consumers import to_toml, wait_until
from tests.notify_api import auth, new_key
from tests.support import bearer, client_token, config_data, free_port, serve, token

START_S = 60.0
ELEMENT = "mark-notify-inbox"
NONCE = "host-page-nonce"


# What this tab's EventSources opened and received, in order, for a test to read: the
# browser's own EventSource, each message also noted in window.received.
RECORDER = """
window.received = [];
const Native = window.EventSource;
window.EventSource = class extends Native {
  constructor(url, options) {
    super(url, options);
    window.received.push({ open: String(url) });
    for (const type of ["ready", "changes"]) {
      this.addEventListener(type, e => window.received.push(
        { type, id: e.lastEventId, data: JSON.parse(e.data) }));
    }
  }
};
"""


def host_app(api: Callable[[], str]) -> Starlette:
    """The embedding site: `/?user=..&locale=..&page_size=..&csp=1` is a page with the
    element (csp: under a strict Content-Security-Policy: no inline styles at all, scripts
    by nonce and from the API, connections to itself and the API);
    `/token?user=..` is its backend's token endpoint: a fresh client JWT each call (a test
    counts them in `app.state.minted`), or one the API refuses while `app.state.refuse`."""
    minted: list[str] = []

    async def page(request: Request) -> Response:
        user = request.query_params.get("user", "anna")
        attrs = "".join(
            f' {name}="{html.escape(request.query_params[key])}"'
            for key, name in (("locale", "locale"), ("page_size", "page-size"))
            if key in request.query_params
        )
        body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>host app</title></head><body>
<script nonce="{NONCE}">
window.violations = [];
document.addEventListener(
  "securitypolicyviolation", e => window.violations.push(e.violatedDirective));
</script>
<button id="before">before</button>
<{ELEMENT} id="inbox"{attrs}></{ELEMENT}>
<script nonce="{NONCE}">{RECORDER}</script>
<script src="{api()}/embed/mark-notify-inbox.js"></script>
<script nonce="{NONCE}">
window.clicked = [];
const inbox = document.getElementById("inbox");
inbox.addEventListener("mark-notify:item-click", e => {{
  window.clicked.push(e.detail.item.id);
  e.preventDefault();
}});
inbox.getToken = () => fetch("/token?user=" + {json.dumps(user)}).then(r => r.json())
  .then(b => b.token);
</script></body></html>"""
        headers = {}
        if request.query_params.get("csp"):
            headers["Content-Security-Policy"] = (
                f"default-src 'none'; script-src 'nonce-{NONCE}' {api()}; "
                f"connect-src 'self' {api()}; style-src 'none'"
            )
        return HTMLResponse(body, headers=headers)

    async def token_endpoint(request: Request) -> Response:
        user = request.query_params["user"]
        minted.append(user)
        if app.state.refuse:
            return JSONResponse({"token": token({"kind": "client", "sub": user}, secret="x" * 40)})
        return JSONResponse({"token": client_token(user)})

    app = Starlette(routes=[Route("/", page), Route("/token", token_endpoint)])
    app.state.minted = minted
    app.state.refuse = False
    return app


@dataclass
class InboxStack:
    host: str
    api_base: str
    api: Process
    dispatcher: Process
    browser: Browser
    http: httpx.AsyncClient
    key: str
    host_app: Starlette
    db_url: str
    contexts: list[BrowserContext] = field(default_factory=list)
    sent: int = 0

    async def tab(self, user: str, context: BrowserContext | None = None, **query: str) -> Page:
        """A tab of the host page for `user`, its element loaded (the bell has its name)."""
        if context is None:
            context = await self.browser.new_context(viewport={"width": 1100, "height": 900})
            self.contexts.append(context)
        page = await context.new_page()
        params = "&".join(f"{k}={v}" for k, v in {"user": user, **query}.items())
        await page.goto(f"{self.host}/?{params}")
        await page.locator(f"{ELEMENT} .bell[aria-label]").wait_for()
        return page

    async def user(self, user_id: str, locale: str = "en") -> None:
        put = await self.http.put(
            f"/v1/users/{user_id}", json={"locale": locale}, headers=auth(self.key)
        )
        assert put.status_code in (200, 201), put.text

    async def event(self, user_id: str, type_: str = "new_episode", **data: Any) -> str:
        """An event for the user, as a producer sends it; its id."""
        self.sent += 1
        if type_ == "new_episode":
            body = {"series": f"Show {self.sent}", "episode": self.sent, "title": "T"}
            body |= {"url": f"https://example.com/{self.sent}"}
        else:
            body = {"amount": "9.99", "currency": "EUR", "order_id": f"o-{self.sent}"}
            body |= {"paid_at": "today"}
        posted = await self.http.post(
            "/v1/events",
            json={
                "type": type_,
                "idempotency_key": f"k-{self.sent}",
                "recipients": {"user_ids": [user_id]},
                "data": body | data,
            },
            headers=auth(self.key),
        )
        assert posted.status_code == 202, posted.text
        event_id: str = posted.json()["id"]
        return event_id

    async def item_of(self, event_id: str, user_id: str) -> str:
        """The id of the user's inbox item of an event of explicit recipients (its
        notification, written with the event)."""
        async with await psycopg.AsyncConnection.connect(self.db_url, autocommit=True) as db:
            cur = await db.execute(
                "SELECT id FROM notifications WHERE event_id = %s AND user_id = %s",
                (event_id, user_id),
            )
            row = await cur.fetchone()
        assert row is not None, f"no notification of {event_id} for {user_id}"
        return str(row[0])

    async def inbox(self, user_id: str, **params: str) -> dict[str, Any]:
        got = await self.http.get("/v1/inbox", params=params, headers=bearer(client_token(user_id)))
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        return body

    async def delivered(self, event_id: str, channel: str = "inbox") -> dict[str, Any]:
        """The event's counts of `channel` once none is queued any more."""

        async def settled() -> bool:
            got = await self.http.get(f"/v1/events/{event_id}", headers=auth(self.key))
            counts: dict[str, Any] = got.json()["channels"].get(channel, {})
            settled.counts = counts  # type: ignore[attr-defined]
            return bool(counts) and not counts.get("queued") and not counts.get("held")

        await wait_until(self.alive(settled), 30, f"event {event_id} on {channel}")
        found: dict[str, Any] = settled.counts  # type: ignore[attr-defined]
        return found

    def alive(self, check: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
        """`check`, failing at once with its log if a process has exited."""

        async def checked() -> bool:
            for process in (self.api, self.dispatcher):
                if not process.running:
                    raise AssertionError(f"{process.name} exited:\n{process.log_tail()}")
            return await check()

        return checked

    async def start_api(self) -> None:
        self.api.start()

        async def ready() -> bool:
            try:
                return (await self.http.get("/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(self.alive(ready), START_S, "the API's /readyz", step=0.1)


def write_config(db_url: str, host: str, path: Path, stream: dict[str, Any]) -> Path:
    data = config_data(db_url)
    data["api"] = data["api"] | {"cors_origins": [host]}
    data["notify"] = data["notify"] | {"inbox_stream": stream}
    data["dispatcher"] = {"sweep_interval": 0.5, "metrics_port": 0}
    path.write_text(to_toml(data))
    return path


@asynccontextmanager
async def inbox_stack(
    db_url: str, tmp_path: Path, stream: dict[str, Any] | None = None
) -> AsyncIterator[InboxStack]:
    """The stack; `stream`: [notify.inbox_stream] settings."""
    need_chromium()
    port = free_port()
    api_base = f"http://127.0.0.1:{port}"
    app = host_app(lambda: api_base)
    async with (
        serve(app) as host,
        httpx.AsyncClient(base_url=api_base, timeout=10) as http,
        async_playwright() as playwright,
    ):
        config = write_config(db_url, host, tmp_path / "inbox.toml", stream or {})
        env = service_env(config, db_url)
        api = api_process(env, port, tmp_path / "api.log")
        dispatcher = dispatcher_process(env, "inbox", tmp_path / "dispatcher.log")
        dispatcher.start()
        browser = await playwright.chromium.launch(
            executable_path=shutil.which("chromium") or CHROMIUM, args=CHROMIUM_ARGS
        )
        stack = InboxStack(
            host, api_base, api, dispatcher, browser, http, new_key(db_url), app, db_url
        )
        try:
            await stack.start_api()
            yield stack
        finally:
            for context in stack.contexts:
                await context.close()
            await browser.close()
            api.stop()
            dispatcher.stop()
