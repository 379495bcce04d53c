"""One-click unsubscribe (RFC 8058): signed links, and the routes that honour them.

Every non-transactional email carries `List-Unsubscribe: <{public_url}/v1/unsubscribe/
{token}>`. The token is an HS256 JWT under `notify.unsubscribe_secret` naming the user,
the category and the email channel, and it expires after `notify.unsubscribe_ttl`. So the
link needs no login, and cannot be altered to unsubscribe someone else.

- `POST /v1/unsubscribe/{token}` is the one-click request a mail client sends (body
  `List-Unsubscribe=One-Click`, though any body is accepted): it switches that channel of
  that category off for the user and keeps every other preference. It answers 200 with a
  short page, or JSON for a client that asks for it. A repeat changes nothing and answers
  the same. A user that no longer exists gets a 200 that changes nothing (status
  `unknown_user`): nobody is left to email.
- `GET` of the same URL never unsubscribes (mail scanners prefetch links): it shows a
  page with a button that POSTs.

A link that is malformed, altered, expired or names a category or channel the config no
longer has is `invalid_unsubscribe_link` (400); one for a transactional category is
`transactional_category` (400). Nothing is written then.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from service.config.load import Config
from service.config.notify import NotifySettings
from service.errors import api_error
from service.notify import signed_tokens
from service.sql import q
from service.state import state_of

# Binds a token to this use: a token signed with the same secret for anything else is refused.
AUDIENCE = "mark-notify:unsubscribe"
PATH = "/v1/unsubscribe/{token}"
COMPACT_JWS_PATTERN = signed_tokens.COMPACT_JWS_PATTERN
MAX_TOKEN_CHARS = signed_tokens.MAX_TOKEN_CHARS
signing_key = signed_tokens.signing_key

_encode = msgspec.json.Encoder().encode


class InvalidLink(ValueError):
    """The token is malformed, altered, expired or not an unsubscribe token."""


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """What a valid link asks for: switch `channel` of `category` off for `user_id`."""

    user_id: str
    category: str
    channel: str


def make_token(
    notify: NotifySettings,
    user_id: str,
    category: str,
    *,
    channel: str = "email",
    environment: str | None = None,
    now: float | None = None,
) -> str:
    # Short claim names: the token is part of a URL in every email.
    claims = {"sub": user_id, "cat": category, "ch": channel}
    return signed_tokens.sign(
        notify, AUDIENCE, claims, notify.unsubscribe_ttl, environment=environment, now=now
    )


def unsubscribe_url(
    notify: NotifySettings,
    user_id: str,
    category: str,
    *,
    channel: str = "email",
    environment: str | None = None,
) -> str:
    """The one-click link of one user's emails of one category."""
    token = make_token(notify, user_id, category, channel=channel, environment=environment)
    return f"{notify.public_url.rstrip('/')}{PATH.format(token=token)}"


def read_token(notify: NotifySettings, token: str, *, environment: str) -> Unsubscribe:
    """The request a token carries; InvalidLink says why it is refused."""
    try:
        claims = signed_tokens.verify(notify, AUDIENCE, token, environment=environment)
        user_id, category, channel = signed_tokens.string_claims(claims, "sub", "cat", "ch")
    except signed_tokens.InvalidToken as exc:
        raise InvalidLink(_reason(str(exc))) from None
    return Unsubscribe(user_id, category, channel)


def _reason(why: str) -> str:
    if why == "too long":
        return "the link is too long"
    if why == "expired":
        return "the link has expired"
    return f"the link is not valid ({why})"


# --- routes ---------------------------------------------------------------------------


class UnsubscribeResult(msgspec.Struct, frozen=True):
    status: Literal["unsubscribed", "unknown_user"]
    category: str
    channel: str


def _checked(request: Request) -> tuple[Config, Unsubscribe]:
    """The config and the link's request, or the ApiError that refuses it."""
    config = state_of(request).config
    try:
        wanted = read_token(
            config.notify, request.path_params["token"], environment=config.environment
        )
    except InvalidLink as exc:
        raise api_error(
            "invalid_unsubscribe_link", f"This unsubscribe link is invalid: {exc}."
        ) from None
    category = config.categories.get(wanted.category)
    channel = config.channels.get(wanted.channel)
    if category is None or channel is None or channel.kind != "email":
        raise api_error(
            "invalid_unsubscribe_link", "This unsubscribe link is for a list that is gone."
        )
    if category.transactional:
        raise api_error(
            "transactional_category",
            f"Emails of category {wanted.category!r} are transactional (receipts, account "
            "notices) and cannot be switched off.",
        )
    return config, wanted


# The token is in the URL: no Referer may carry it off, and no cache or index may keep it.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


def _label(config: Config, wanted: Unsubscribe) -> str:
    description = config.categories[wanted.category].description
    return html.escape(description or wanted.category)


def _page(title: str, body: str) -> HTMLResponse:
    text = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>\n"
        f'<body style="font-family:sans-serif;max-width:32em;margin:3em auto">\n{body}\n'
        "</body></html>\n"
    )
    return HTMLResponse(text, headers=_PAGE_HEADERS)


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/html" not in accept


async def confirm_page(request: Request) -> Response:
    config, wanted = _checked(request)
    # No action attribute: the form posts back to this very URL, whatever proxy is in front.
    return _page(
        "Unsubscribe",
        f"<h1>Unsubscribe</h1>\n<p>Stop emails about: <b>{_label(config, wanted)}</b>?</p>\n"
        '<form method="post">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


async def unsubscribe(request: Request) -> Response:
    config, wanted = _checked(request)
    params = {"user_id": wanted.user_id, "category": wanted.category, "channel": wanted.channel}
    async with state_of(request).pool.connection() as conn:
        cur = await conn.execute(q("unsubscribe_channel"), params)
        row = await cur.fetchone()
    user_exists = bool(row and row[0])
    status: Literal["unsubscribed", "unknown_user"] = (
        "unsubscribed" if user_exists else "unknown_user"
    )
    if _wants_json(request):
        body = _encode(UnsubscribeResult(status, wanted.category, wanted.channel))
        return Response(body, media_type="application/json", headers=_PAGE_HEADERS)
    if not user_exists:
        return _page(
            "Unsubscribe",
            "<h1>Nothing to unsubscribe</h1>\n<p>This address is no longer on our lists.</p>",
        )
    return _page(
        "Unsubscribed",
        f"<h1>You are unsubscribed</h1>\n<p>You will get no more emails about: "
        f"<b>{_label(config, wanted)}</b>.</p>",
    )


ROUTES: list[BaseRoute] = [
    Route(PATH, confirm_page, methods=["GET"]),
    Route(PATH, unsubscribe, methods=["POST"]),
]
