"""A mailing's preview: every channel rendered by the dispatchers' own templates for a user
id and a locale, and the email's HTML served on its own route so that it looks as a mail
client shows it.

The panel's pages forbid inline styles (their CSP is `style-src 'self'`), and a `srcdoc`
frame inherits its parent's CSP, which dropped every template's `style=` attribute. The
HTML route answers with its own CSP instead: inline styles and images, nothing else (no
script, no form, no fetch), and it may be framed only by the panel itself. The frame is
sandboxed without `allow-scripts`; it keeps the panel's origin (`allow-same-origin`) only
so that admin.js can read the document's height and size the frame to it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from service.admin.mailing_forms import draft_of, locales_of
from service.admin.mailings import _get, _id
from service.admin.sessions import Session
from service.admin.web import SECURITY_HEADERS, page, pool_of, problem, render
from service.sql import q
from service.state import RenderError, state_of

# What an email's HTML may use in the preview: its own inline styles and images.
FRAME_HEADERS = SECURITY_HEADERS | {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
        "form-action 'none'; frame-ancestors 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "SAMEORIGIN",
}
# The preview widths offered: a desktop mail client and a phone's.
PHONE_WIDTH = 390


async def _rendered(request: Request, who: Session) -> dict[str, Any] | Response:
    """Every channel of the mailing rendered for the asked user and locale, or the
    problem page to answer instead."""
    mailing_id = _id(request)
    row = await _get(request, mailing_id) if mailing_id is not None else None
    if row is None:
        return problem(request, who, 404, "No such mailing.")
    state = state_of(request)
    config = state.config
    draft = draft_of(row)
    templates = state.templates.get(draft.event_type)
    settings = config.event_types.get(draft.event_type)
    if templates is None or settings is None:
        return problem(request, who, 409, f"The type {draft.event_type} is no longer configured.")
    user_id = (request.query_params.get("user") or "").strip()[:128]
    locale = (request.query_params.get("locale") or "").strip()[:35] or None
    asked_locale = locale or ""
    note = None
    if user_id:
        async with pool_of(request).connection() as conn:
            cur = await conn.execute(q("admin_preview_user"), {"id": user_id})
            user = await cur.fetchone()
        if user is None:
            note = f"{user_id} is not a known user: the preview shows what they would get."
        elif locale is None:
            locale = user[1]
    context: dict[str, Any] = dict(draft.event_data())
    context |= {
        "recipient": {"id": user_id or "preview-user", "locale": locale},
        "notification_id": "preview",
        "event_id": str(row["event_id"] or "preview"),
    }
    # Not working links: a preview must not hand out a real user's signed tokens.
    public_url = config.notify.public_url.rstrip("/")
    context["preferences_url"] = f"{public_url}/v1/preferences/manage/…"
    if not config.categories[settings.category].transactional:
        context["unsubscribe_url"] = f"{public_url}/v1/unsubscribe/…"
    channels = []
    for channel in settings.channels:
        kind = config.channels[channel].kind
        chosen = getattr(templates, "pick_locale", lambda _l, _k: None)(locale, kind)
        try:
            parts = templates.render(kind, locale, context)
            channels.append({"channel": channel, "kind": kind, "locale": chosen, "parts": parts})
        except (RenderError, KeyError) as exc:
            channels.append({"channel": channel, "kind": kind, "locale": chosen, "error": str(exc)})
    query = urlencode({"user": user_id, "locale": asked_locale})
    return {
        "title": f"Preview: {row['name']}",
        "m": row,
        "user_id": user_id,
        "locale": locale or "",
        "locales": locales_of(templates),
        "note": note,
        "channels": channels,
        "query": query,
        "phone_width": PHONE_WIDTH,
    }


@page("manager")
async def preview_mailing(request: Request, who: Session) -> Response:
    rendered = await _rendered(request, who)
    if isinstance(rendered, Response):
        return rendered
    return render(request, who, "mailing_preview.html", rendered)


@page("manager")
async def preview_html(request: Request, who: Session) -> Response:
    """One channel's email HTML alone, as the frame on the preview page shows it."""
    rendered = await _rendered(request, who)
    if isinstance(rendered, Response):
        return rendered
    channel = request.path_params["channel"]
    for c in rendered["channels"]:
        if c["channel"] == channel and c["kind"] == "email" and "parts" in c:
            html = str(c["parts"].get("html") or "")
            # A fragment gets a document around it, so that it is not in quirks mode.
            document = (
                '<!doctype html><html><head><meta charset="utf-8">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"</head><body>{html}</body></html>"
                if "<html" not in html.lower()
                else html
            )
            return HTMLResponse(document, headers=FRAME_HEADERS)
    return problem(request, who, 404, f"The mailing has no email channel {channel!r} to show.")


ROUTES = [
    Route("/mailings/{mailing_id}/preview", preview_mailing, methods=["GET"]),
    Route("/mailings/{mailing_id}/preview/{channel}.html", preview_html, methods=["GET"]),
]
