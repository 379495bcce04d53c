"""The hosted preference center: a page, linked from every email, where a user changes
their notification preferences with no login and no JavaScript.

The link is `{public_url}/v1/preferences/manage/{token}`: a signed token
(service/notify/signed_tokens.py) for AUDIENCE naming the user, which expires after
`notify.preferences_link_ttl`. Like the unsubscribe link it is its own credential, and a
forged, altered or expired one, or a token made for another use (an unsubscribe link),
is `invalid_preferences_link` (400): nothing is read or written.

- GET shows the user's effective preferences, read by GET /v1/preferences' own query
  (load_preferences()), as a form (service/notify/preference_page.py). It never writes
  (mail scanners open links).
- POST applies the form (service/notify/preference_form.py) through PUT's own check and
  query (save_preferences()), so the page and the API cannot disagree, then answers 303
  back to the page with `?saved=1` (post/redirect/get). A refused form writes nothing.
- A user who no longer exists is `unknown_user` (404): a page that says so.

A refusal is a page in the user's language for a browser, or the JSON error for a client
that asks for application/json (and not text/html), with the same status and code.

CSRF: no cookie is involved. The link is the credential, so a cross-site form cannot
ride on a session, and SameSite has nothing to apply to. A POST must still (a) not be
cross-site by the browser's own word (Sec-Fetch-Site, Origin: preference_form.same_site())
and (b) carry the form token of a page that this link opened, signed and expiring: a
blind POST to a known URL (a replayed request, a prefetcher) writes nothing. The page
runs no script and may not be framed (clickjacking).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.config.load import Config
from service.config.notify import NotifySettings
from service.errors import ApiError, api_error
from service.http import ClientGone, read_body
from service.notify import signed_tokens
from service.notify.preference_form import (
    check_form_token,
    form_token,
    parse_form,
    preferences_body,
    same_site,
)
from service.notify.preference_page import (
    PAGE_HEADERS,
    accepted_language,
    form_page,
    language,
    problem_page,
)
from service.notify.preferences import load_preferences, save_preferences
from service.sql import q
from service.state import State, state_of

# Binds a token to this use: an unsubscribe token, signed with the same secret, is refused.
AUDIENCE = "mark-notify:preferences"
PATH = "/v1/preferences/manage/{token}"
FORM_TYPE = "application/x-www-form-urlencoded"
# Far above the form of any configuration (a few dozen bytes per box).
FORM_BYTES = 64 * 1024


class InvalidLink(ValueError):
    """The token is malformed, altered, expired or not a preference-center token."""


def make_token(
    notify: NotifySettings,
    user_id: str,
    *,
    environment: str | None = None,
    now: float | None = None,
) -> str:
    ttl = notify.preferences_link_ttl
    return signed_tokens.sign(
        notify, AUDIENCE, {"sub": user_id}, ttl, environment=environment, now=now
    )


def preferences_url(notify: NotifySettings, user_id: str, *, environment: str | None = None) -> str:
    """The "manage notifications" link of one user's emails."""
    token = make_token(notify, user_id, environment=environment)
    return f"{notify.public_url.rstrip('/')}{PATH.format(token=token)}"


def read_token(notify: NotifySettings, token: str, *, environment: str) -> str:
    """The user a token names; InvalidLink says why it is refused."""
    try:
        claims = signed_tokens.verify(notify, AUDIENCE, token, environment=environment)
        (user_id,) = signed_tokens.string_claims(claims, "sub")
    except signed_tokens.InvalidToken as exc:
        raise InvalidLink("it has expired" if str(exc) == "expired" else str(exc)) from None
    return user_id


# --- routes ---------------------------------------------------------------------------


def _link(request: Request) -> tuple[Config, str, str]:
    """The config, the link's token and its user, or `invalid_preferences_link`."""
    config = state_of(request).config
    token: str = request.path_params["token"]
    try:
        user_id = read_token(config.notify, token, environment=config.environment)
    except InvalidLink as exc:
        raise api_error(
            "invalid_preferences_link", f"This preferences link is invalid: {exc}."
        ) from None
    return config, token, user_id


async def _user(request: Request, state: State, user_id: str) -> tuple[str | None, Any]:
    """The user's time zone and stored switches, or `unknown_user`; their language is
    kept for the page, or its refusal."""
    async with state.pool.connection() as conn:
        cur = await conn.execute(q("preference_center_user"), {"user_id": user_id})
        row = await cur.fetchone()
    if row is None:
        raise api_error("unknown_user", "This account no longer exists.")
    locale, time_zone, switches = row
    request.state.locale = locale
    return time_zone, switches


def _own_origins(request: Request, config: Config) -> set[str]:
    """Where the page itself is: the configured public URL, and the host it was asked of."""
    public = urlsplit(config.notify.public_url)
    origins = {f"{public.scheme}://{public.netloc}"}
    host = request.headers.get("host")
    if host:
        origins.add(f"{request.url.scheme}://{host}")
    return origins


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/html" not in accept


Handler = Callable[[Request], Awaitable[Response]]


def _refusals_as_pages(handler: Handler) -> Handler:
    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            if _wants_json(request):
                raise
            if hasattr(request.state, "locale"):
                lang = language(request.state.locale)
            else:
                lang = accepted_language(request.headers.get("accept-language", ""))
            # A refused form can be tried again from the page; a dead link cannot.
            back = request.method == "POST" and exc.code not in (
                "invalid_preferences_link",
                "unknown_user",
            )
            return problem_page(exc, lang, back=back)

    return handle


@_refusals_as_pages
async def show(request: Request) -> Response:
    state = state_of(request)
    config, token, user_id = _link(request)
    time_zone, _ = await _user(request, state, user_id)
    shown = await load_preferences(state, user_id)
    return form_page(
        config,
        shown,
        locale=request.state.locale,
        time_zone=time_zone,
        form_token=form_token(config.notify, token, environment=config.environment),
        saved="saved" in request.query_params,
    )


async def _form_body(request: Request) -> bytes:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise api_error("unsupported_media_type", f"The body must be {FORM_TYPE}.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > FORM_BYTES:
        raise api_error("payload_too_large", f"The body is over {FORM_BYTES} bytes.")
    try:
        return await read_body(request.receive, FORM_BYTES)
    except ClientGone:
        raise api_error("invalid_body", "The client disconnected mid-body.") from None


@_refusals_as_pages
async def save(request: Request) -> Response:
    state = state_of(request)
    config, token, user_id = _link(request)
    _, stored = await _user(request, state, user_id)
    if not same_site(request.headers, _own_origins(request, config)):
        raise api_error("invalid_preferences_form", "The form was posted from another site.")
    form = parse_form(await _form_body(request))
    check_form_token(config.notify, token, form.form_token, environment=config.environment)
    shown = await load_preferences(state, user_id)
    await save_preferences(state, user_id, preferences_body(config, shown, stored, form))
    # Relative: back to this very URL, whatever proxy or path prefix is in front.
    return Response(status_code=303, headers={"Location": "?saved=1"} | PAGE_HEADERS)


ROUTES: list[BaseRoute] = [
    Route(PATH, show, methods=["GET"]),
    Route(PATH, save, methods=["POST"]),
]
