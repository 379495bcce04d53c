"""The preference center's form: what a POST must carry to be believed, and how its fields
become the PreferencesBody that PUT /v1/preferences would take.

Fields (application/x-www-form-urlencoded, as a browser posts the page's form):

- `form_token`: made for the page by form_token(), checked by check_form_token();
- `on/<category>/<channel>`: `on` or `off`. The page writes a hidden `off` before each
  checkbox of the same name that says `on`, so the last value is the box's state;
- `quiet/<channel>/start`, `quiet/<channel>/end`: `HH:MM`, or both empty for none;
- `muted`: `on` or `off` (hidden `off`, then the checkbox, as above);
- `action`: `save`, or `no_email` (switch email off for every non-transactional category).

A field left out leaves its setting as it is. A box posted as it is now shown (its
effective state) keeps the stored switch, or its absence: only a box the user changed
becomes an explicit switch, so a default the user never touched follows the
configuration. The result goes through the API's own check() (service/notify/
preferences.py), so a crafted form cannot do what PUT may not (a transactional category
switched off, a name the configuration lacks).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from service.config.load import Config
from service.config.notify import NotifySettings
from service.errors import api_error
from service.http import decode_error
from service.notify import signed_tokens
from service.notify.notify_wire import Preferences, PreferencesBody

# Binds the hidden field to one page of one link, for a while.
FORM_AUDIENCE = "mark-notify:preferences-form"
FORM_TTL = timedelta(hours=24)
SWITCH_VALUES = ("on", "off")
ACTIONS = ("save", "no_email")
# More fields than any configuration has boxes: a form past it is not the page's.
MAX_FIELDS = 2000


@dataclass(frozen=True, slots=True)
class FormInput:
    """The fields of one POST, checked for shape (not yet against the configuration)."""

    form_token: str | None
    switches: dict[tuple[str, str], bool] = field(default_factory=dict)
    quiet: dict[str, tuple[str, str]] = field(default_factory=dict)
    muted: bool | None = None
    action: str = "save"


def _link_digest(link_token: str) -> str:
    digest = hashlib.sha256(link_token.encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def form_token(
    notify: NotifySettings, link_token: str, *, environment: str, now: float | None = None
) -> str:
    """The hidden field of the page that `link_token` opened."""
    claims = {"lnk": _link_digest(link_token)}
    return signed_tokens.sign(
        notify, FORM_AUDIENCE, claims, FORM_TTL, environment=environment, now=now
    )


def check_form_token(
    notify: NotifySettings, link_token: str, value: str | None, *, environment: str
) -> None:
    """Refuse (`invalid_preferences_form`) a form token that is missing, altered, expired or
    made for another link's page."""
    if not value:
        raise api_error("invalid_preferences_form", "The form has no form token.")
    try:
        claims = signed_tokens.verify(notify, FORM_AUDIENCE, value, environment=environment)
        (bound,) = signed_tokens.string_claims(claims, "lnk")
    except signed_tokens.InvalidToken as exc:
        why = "expired: reload the page" if str(exc) == "expired" else "not valid"
        raise api_error("invalid_preferences_form", f"The form token is {why}.") from None
    if not hmac.compare_digest(bound, _link_digest(link_token)):
        raise api_error("invalid_preferences_form", "The form token is of another link.")


def same_site(headers: Mapping[str, str], own_origins: set[str]) -> bool:
    """Whether a browser says this POST comes from the page itself.

    `Sec-Fetch-Site` is set by the browser and cannot be forged by a page: anything but
    `same-origin` (or `none`, a request the user typed) is another site's. `Origin`, when
    given, must be ours; the page's own POST may say `null` (its no-referrer policy makes
    the browser hide it), which counts only beside `Sec-Fetch-Site: same-origin`. Neither
    header (a client that is not a browser, or a very old one): the form token decides.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return site == "same-origin"
    return origin in own_origins


def _field_error(message: str) -> Exception:
    return api_error("invalid_body", message)


def parse_form(body: bytes) -> FormInput:
    """The fields of a form body, or `invalid_body` naming the first one that is wrong."""
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise _field_error("The form is not valid url-encoded UTF-8.") from None
    token: str | None = None
    switches: dict[tuple[str, str], bool] = {}
    quiet: dict[str, dict[str, str]] = {}
    muted: bool | None = None
    action = "save"
    # Later values win: the checkbox after its hidden "off".
    for name, value in pairs:
        parts = name.split("/")
        if name == "form_token":
            token = value
        elif name == "action":
            if value not in ACTIONS:
                raise _field_error(f"action: {value!r} is not one of {', '.join(ACTIONS)}.")
            action = value
        elif name == "muted" or (parts[0] == "on" and len(parts) == 3):
            if value not in SWITCH_VALUES:
                raise _field_error(f"{name}: {value!r} is neither on nor off.")
            if name == "muted":
                muted = value == "on"
            else:
                switches[(parts[1], parts[2])] = value == "on"
        elif parts[0] == "quiet" and len(parts) == 3 and parts[2] in ("start", "end"):
            quiet.setdefault(parts[1], {})[parts[2]] = value
        else:
            raise _field_error(f"{name!r} is not a field of the preference form.")
    windows = {ch: (w.get("start", ""), w.get("end", "")) for ch, w in quiet.items()}
    return FormInput(token, switches, windows, muted, action)


def _stored_switches(config: Config, stored: Any) -> dict[str, dict[str, bool]]:
    """The user's stored switches the configuration still has. Those of a transactional
    category, or of a name that is gone, change nothing (it is always on, or not there),
    and PUT would refuse the gone ones: they are left out."""
    kept: dict[str, dict[str, bool]] = {}
    for name, switches in (stored if isinstance(stored, dict) else {}).items():
        category = config.categories.get(name)
        if category is None or category.transactional or not isinstance(switches, dict):
            continue
        on = {ch: v for ch, v in switches.items() if ch in config.channels and isinstance(v, bool)}
        if on:
            kept[name] = on
    return kept


def preferences_body(
    config: Config, shown: Preferences, stored: Any, form: FormInput
) -> PreferencesBody:
    """The whole preferences the form asks for: the stored ones with the form's changes
    (see the module's docstring). Not yet checked against the configuration: the writer
    does that with the API's check()."""
    switches = _stored_switches(config, stored)
    for (category, channel), on in form.switches.items():
        now = shown.categories.get(category, {}).get(channel)
        # A name the configuration lacks is passed on, for check() to refuse.
        if now is None or on != now:
            switches.setdefault(category, {})[channel] = on
    if form.action == "no_email":
        emails = [name for name, channel in config.channels.items() if channel.kind == "email"]
        for name, settings in config.categories.items():
            if not settings.transactional:
                switches.setdefault(name, {}).update(dict.fromkeys(emails, False))
    quiet: dict[str, Any] = {ch: msgspec.to_builtins(w) for ch, w in shown.quiet_hours.items()}
    for channel, (start, end) in form.quiet.items():
        if not start and not end:
            quiet.pop(channel, None)
        elif not start or not end:
            raise api_error(
                "invalid_quiet_hours", f"quiet_hours.{channel}: give both times, or neither."
            )
        else:
            quiet[channel] = {"start": start, "end": end}
    muted = shown.muted if form.muted is None else form.muted
    wanted = {"muted": muted, "categories": switches, "quiet_hours": quiet}
    try:
        return msgspec.convert(wanted, PreferencesBody)
    except msgspec.ValidationError as exc:
        raise decode_error(exc, {"$.quiet_hours": "invalid_quiet_hours"}) from None
