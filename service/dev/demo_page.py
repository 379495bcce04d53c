"""`/dev/inbox`: a page showing the `<mark-notify-inbox>` element (docs/inbox.md) for a
development user, served by the API only when `environment = "development"` (bin/dev's
example config); a 404 otherwise.

- `GET /dev/inbox?user=user-1&locale=en`: the page; the element on it gets its client JWT
  from the route below, as a host app's `getToken` would from its own backend.
- `POST /dev/inbox/token` `{"user", "locale"}`: a client JWT of the dev secret for that
  user (bin/token's), the user created first if new, so its preferences can be opened.
- `POST /dev/inbox/event` `{"user", "locale"}`: a `new_episode` event for that user, as a
  producer would send one, to watch it arrive.
"""

from __future__ import annotations

import html
import json
import uuid
from typing import Annotated, Any, Literal

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import Receive, Scope, Send

from service.dev.tokens import mint
from service.errors import api_error
from service.event_intake import IntakeRefused, accept_event
from service.http import json_response, read_json
from service.sql import q
from service.state import state_of
from service.text_rules import SAFE_SEGMENT_PATTERN, is_safe

DEMO_TYPE = "new_episode"
PRODUCER = "dev-demo"
TOKEN_TTL_S = 3600
EPISODES = (
    ("Dark", "Secrets"),
    ("Dark", "Lies"),
    ("Dark", "Past and Present"),
    ("Dark", "Double Lives"),
    ("Dark", "Truths"),
)


class DemoUser(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    user: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=SAFE_SEGMENT_PATTERN)]
    locale: Literal["en", "ru"] = "en"


class DemoToken(msgspec.Struct, frozen=True):
    token: str


class DemoEvent(msgspec.Struct, frozen=True):
    id: str
    created: bool


_decode = msgspec.json.Decoder(DemoUser).decode
_encode = msgspec.json.Encoder().encode

PAGE = """<!doctype html>
<html lang="{locale}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mark-notify: the inbox element</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 0; color: #1d1d1f; }}
header {{ display: flex; align-items: center; justify-content: space-between;
  padding: 8px 20px; border-bottom: 1px solid #e5e7eb; }}
main {{ max-width: 720px; padding: 8px 20px; }}
code, pre {{ background: #f3f4f6; border-radius: 4px; padding: 1px 4px; }}
pre {{ padding: 8px; overflow-x: auto; }}
form {{ display: flex; gap: 8px; flex-wrap: wrap; align-items: end; }}
label {{ display: grid; }}
</style>
</head>
<body>
<header>
  <strong>mark-notify</strong>
  <mark-notify-inbox id="inbox" locale="{locale}"></mark-notify-inbox>
</header>
<main>
  <h1>The inbox element</h1>
  <p>Signed in as <b id="who">{user_html}</b> with a development token. The bell above is
  <code>&lt;mark-notify-inbox&gt;</code>, loaded from <code>/embed/mark-notify-inbox.js</code>.</p>
  <p><button type="button" id="send">Send a test event</button>
  <span id="sent" role="status"></span></p>
  <form method="get" action="/dev/inbox">
    <label>User <input name="user" value="{user_html}" required maxlength="128"></label>
    <label>Language <select name="locale">
      <option value="en"{en}>English</option><option value="ru"{ru}>Русский</option>
    </select></label>
    <button>Switch</button>
  </form>
  <p>Or as a producer service would, from a terminal:</p>
  <pre>KEY=$(bin/apikey create demo --scope events:write --quiet)
curl -s http://{host}/v1/events -H "Authorization: Bearer $KEY" \\
  -H 'Content-Type: application/json' \\
  -d '{{"type": "new_episode", "idempotency_key": "demo-1",
       "recipients": {{"user_ids": [{user_json_html}]}},
       "data": {{"series": "Dark", "episode": 1, "title": "Secrets",
                "url": "https://example.com/dark/1"}}}}'</pre>
  <p>How to embed it in an app: <code>docs/inbox.md</code>.</p>
</main>
<script src="/embed/mark-notify-inbox.js"></script>
<script>
const who = {{ user: {user_js}, locale: {locale_js} }};
const post = (path) => fetch(path, {{
  method: "POST", headers: {{ "Content-Type": "application/json" }}, body: JSON.stringify(who),
}}).then(r => r.ok ? r.json() : Promise.reject(new Error(r.status)));
document.getElementById("inbox").getToken = () => post("/dev/inbox/token").then(b => b.token);
document.getElementById("send").addEventListener("click", async () => {{
  const out = document.getElementById("sent");
  try {{
    const event = await post("/dev/inbox/event");
    out.textContent = `event ${{event.id}} sent`;
  }} catch (err) {{
    out.textContent = `not sent: ${{err.message}}`;
  }}
}});
</script>
</body>
</html>
"""


def _js(value: str) -> str:
    # JSON inside a <script>: no "</script>" or "<!--" can close or change it.
    return json.dumps(value).replace("<", "\\u003c")


async def page(request: Request) -> Response:
    user = request.query_params.get("user", "user-1")
    locale = request.query_params.get("locale", "en")
    if not is_safe(user, 128, segment=True) or locale not in ("en", "ru"):
        raise api_error("invalid_query", "user is a user id; locale is en or ru.")
    body = PAGE.format(
        locale=locale,
        user_html=html.escape(user),
        user_json_html=html.escape(json.dumps(user)),
        user_js=_js(user),
        locale_js=_js(locale),
        en=" selected" if locale == "en" else "",
        ru=" selected" if locale == "ru" else "",
        host=html.escape(request.headers.get("host", "127.0.0.1:8000")),
    )
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


async def _who(request: Request) -> DemoUser:
    return await read_json(request, _decode, 1024)


async def token(request: Request) -> Response:
    who = await _who(request)
    state = state_of(request)
    async with state.pool.connection() as conn:
        cur = await conn.execute(q("get_user"), {"user_id": who.user})
        if await cur.fetchone() is None:
            user = {"id": who.user, "locale": who.locale, "devices": []}
            await conn.execute(q("put_users"), {"users": _encode([user]).decode()})
    claims: dict[str, object] = {"kind": "client", "sub": who.user}
    return json_response(DemoToken(mint(claims, ttl_s=TOKEN_TTL_S, config=state.config)))


async def event(request: Request) -> Response:
    who = await _who(request)
    state = state_of(request)
    if DEMO_TYPE not in state.config.event_types:
        raise api_error("unknown_event_type", f"This config has no {DEMO_TYPE!r} event type.")
    number = uuid.uuid4().int % len(EPISODES)
    series, title = EPISODES[number]
    data: dict[str, Any] = {
        "series": series,
        "episode": number + 1,
        "title": title,
        "url": f"https://example.com/dark/{number + 1}",
    }
    try:
        async with state.pool.connection() as conn:
            accepted = await accept_event(
                conn,
                producer=PRODUCER,
                idempotency_key=f"demo:{uuid.uuid4()}",
                type_name=DEMO_TYPE,
                recipients=_encode({"users": [{"id": who.user, "locale": who.locale}]}).decode(),
                data=_encode(data).decode(),
                send_at=None,
                chunk=state.config.notify.chunk_size,
            )
    except IntakeRefused as exc:
        raise api_error(exc.code, exc.message) from None
    return json_response(DemoEvent(accepted.id, accepted.created), 202)


ROUTES = [
    Route("/inbox", page, methods=["GET"]),
    Route("/inbox/token", token, methods=["POST"]),
    Route("/inbox/event", event, methods=["POST"]),
]


class _Gate:
    """The demo's routes in development; a 404 for all of them anywhere else."""

    def __init__(self) -> None:
        self.router = Router(routes=ROUTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["app"].state.mn.config.environment != "development":
            raise HTTPException(404, "Not Found")
        await self.router(scope, receive, send)


def demo_mount() -> Mount:
    return Mount("/dev", app=_Gate())
