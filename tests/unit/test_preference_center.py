"""The preference center's link and form, without a server: what a link carries and every
way it is refused; the form token; the same-site check; and how a form becomes the body
PUT /v1/preferences takes."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import jwt
import msgspec
import pytest

from service.config.notify import CHANNEL_KINDS, NotifySettings
from service.errors import ApiError
from service.notify import preference_form as form
from service.notify.notify_wire import Preferences, QuietHours
from service.notify.preference_center import (
    AUDIENCE,
    InvalidLink,
    make_token,
    preferences_url,
    read_token,
)
from service.notify.preference_page import TEXTS, language
from service.notify.unsubscribe import make_token as unsubscribe_token
from tests.support import make_config

SECRET = "unit-unsubscribe-secret-0123456789abcdef"
NOTIFY = NotifySettings(public_url="https://mail.example/", unsubscribe_secret=SECRET)
CONFIG = make_config("postgresql://unused")


def test_a_link_names_its_user_and_nothing_else() -> None:
    url = preferences_url(NOTIFY, "user-7")
    prefix = "https://mail.example/v1/preferences/manage/"
    assert url.startswith(prefix)
    token = url.removeprefix(prefix)
    assert "/" not in token
    assert read_token(NOTIFY, token, environment="production") == "user-7"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"sub", "aud", "exp"}
    assert claims["aud"] == AUDIENCE
    assert len(url) < 250


def test_a_link_expires_after_its_own_ttl() -> None:
    notify = NotifySettings(
        unsubscribe_secret=SECRET,
        unsubscribe_ttl=timedelta(days=90),
        preferences_link_ttl=timedelta(days=2),
    )
    day = timedelta(days=1).total_seconds()
    assert read_token(notify, make_token(notify, "u", now=time.time() - day), environment="t")
    stale = make_token(notify, "u", now=time.time() - 3 * day)
    with pytest.raises(InvalidLink, match="expired"):
        read_token(notify, stale, environment="test")
    # The default is the unsubscribe link's.
    assert NotifySettings().preferences_link_ttl == NotifySettings().unsubscribe_ttl


def _flip(signature: str) -> str:
    return signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]


def test_a_forged_altered_or_foreign_link_is_refused() -> None:
    token = make_token(NOTIFY, "user-7")
    header, _, signature = token.split(".")
    now = int(time.time())
    refused = {
        "another user's claims": f"{header}.{make_token(NOTIFY, 'user-8').split('.')[1]}."
        f"{signature}",
        "altered signature": f"{header}.{token.split('.')[1]}.{_flip(signature)}",
        "other secret": make_token(
            NotifySettings(unsubscribe_secret="another-secret-0123456789abcdef0123"), "user-7"
        ),
        "unsigned": jwt.encode(
            {"sub": "user-7", "aud": AUDIENCE, "exp": now + 60}, "", algorithm="none"
        ),
        "an unsubscribe link's token": unsubscribe_token(NOTIFY, "user-7", "content"),
        "a form token": form.form_token(NOTIFY, token, environment="test"),
        "no user": jwt.encode({"aud": AUDIENCE, "exp": now + 60}, SECRET, algorithm="HS256"),
        "no expiry": jwt.encode({"sub": "user-7", "aud": AUDIENCE}, SECRET, algorithm="HS256"),
        "padded": token + "=",
        "too long": token + "A" * 3000,
    }
    for what, bad in refused.items():
        with pytest.raises(InvalidLink):
            read_token(NOTIFY, bad, environment="test")
            pytest.fail(what)


def test_the_form_token_is_bound_to_its_link_and_expires() -> None:
    link = make_token(NOTIFY, "user-7")
    good = form.form_token(NOTIFY, link, environment="test")
    form.check_form_token(NOTIFY, link, good, environment="test")
    header, claims, signature = good.split(".")
    other_link = make_token(NOTIFY, "user-8")
    stale = form.form_token(
        NOTIFY, link, environment="test", now=time.time() - form.FORM_TTL.total_seconds() - 60
    )
    refused = {
        "missing": None,
        "empty": "",
        "another link's": form.form_token(NOTIFY, other_link, environment="test"),
        "tampered": f"{header}.{claims}.{_flip(signature)}",
        "expired": stale,
        "the link itself": link,
    }
    for what, value in refused.items():
        with pytest.raises(ApiError) as caught:
            form.check_form_token(NOTIFY, link, value, environment="test")
        assert (caught.value.status, caught.value.code) == (403, "invalid_preferences_form"), what
    with pytest.raises(ApiError, match="expired"):
        form.check_form_token(NOTIFY, link, stale, environment="test")


OURS = {"https://mail.example", "http://127.0.0.1:8000"}


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({}, True),
        ({"sec-fetch-site": "same-origin"}, True),
        ({"sec-fetch-site": "same-origin", "origin": "null"}, True),
        ({"sec-fetch-site": "same-origin", "origin": "https://mail.example"}, True),
        ({"origin": "http://127.0.0.1:8000"}, True),
        ({"sec-fetch-site": "none"}, True),
        ({"sec-fetch-site": "cross-site"}, False),
        ({"sec-fetch-site": "same-site"}, False),
        ({"sec-fetch-site": "cross-site", "origin": "https://mail.example"}, False),
        ({"origin": "https://evil.example"}, False),
        ({"origin": "http://mail.example"}, False),
        ({"origin": "null"}, False),
        ({"sec-fetch-site": "same-origin", "origin": "https://evil.example"}, False),
    ],
)
def test_only_the_page_itself_may_post(headers: dict[str, str], allowed: bool) -> None:
    assert form.same_site(headers, OURS) is allowed


def test_the_last_value_of_a_field_counts_and_unknown_fields_are_refused() -> None:
    parsed = form.parse_form(
        b"form_token=t&on%2Fcontent%2Femail=off&on%2Fcontent%2Femail=on&on/social/push=off"
        b"&muted=off&quiet/push/start=22%3A00&quiet/push/end=07:00&action=no_email"
    )
    assert parsed == form.FormInput(
        "t",
        {("content", "email"): True, ("social", "push"): False},
        {"push": ("22:00", "07:00")},
        False,
        "no_email",
    )
    assert form.parse_form(b"").form_token is None
    for body in (
        b"form_token=t&colour=red",
        b"on/content=off",
        b"on/content/email/x=on",
        b"on/content/email=yes",
        b"muted=1",
        b"action=delete",
        b"quiet/push/middle=10:00",
        b"on/content/email=%FF",
        "on/content/email=\u00e9".encode(),
    ):
        with pytest.raises(ApiError) as caught:
            form.parse_form(body)
        assert caught.value.code == "invalid_body", body


def _shown(**changes: Any) -> Preferences:
    """The effective preferences of a user who set nothing, under the test config."""
    categories = {
        "content": {"email": True, "inbox": True, "sms": False, "push": True},
        "social": {"email": False, "inbox": True, "sms": True, "push": True},
        "account": dict.fromkeys(("email", "inbox", "sms", "push"), True),
        "billing": dict.fromkeys(("email", "inbox", "sms", "push"), True),
    }
    fields: dict[str, Any] = {
        "muted": False,
        "categories": categories,
        "quiet_hours": {},
        "transactional": ["account", "billing"],
    }
    return Preferences(**(fields | changes))


def _body(stored: Any, fields: str, shown: Preferences | None = None) -> dict[str, Any]:
    parsed = form.parse_form(fields.encode())
    body = form.preferences_body(CONFIG, shown or _shown(), stored, parsed)
    result: dict[str, Any] = msgspec.to_builtins(body)
    return result


def test_only_changed_boxes_become_switches_and_stored_ones_are_kept() -> None:
    every_box_as_shown = "&".join(
        f"on/{c}/{ch}={'on' if on else 'off'}"
        for c, chans in _shown().categories.items()
        if c not in ("account", "billing")
        for ch, on in chans.items()
    )
    # Nothing changed: the defaults stay defaults (nothing pinned), the stored switch stays.
    stored = {"social": {"push": True}}
    assert _body(stored, every_box_as_shown) == {
        "muted": False,
        "categories": {"social": {"push": True}},
        "quiet_hours": {},
    }
    changed = every_box_as_shown.replace("on/content/email=on", "on/content/email=off")
    assert _body(stored, changed)["categories"] == {
        "social": {"push": True},
        "content": {"email": False},
    }
    # Switches of a category or channel the config no longer has, or of a transactional
    # category, are dropped: PUT would refuse the first, the second changes nothing.
    stale = {"gone": {"email": False}, "content": {"fax": False, "push": False}, "account": {}}
    assert _body(stale, "")["categories"] == {"content": {"push": False}}


def test_a_crafted_form_is_passed_on_for_the_api_rule_to_refuse() -> None:
    # The API's check() refuses these (tests/integration/test_preference_center.py).
    assert _body({}, "on/account/email=off")["categories"] == {"account": {"email": False}}
    assert _body({}, "on/nope/email=on")["categories"] == {"nope": {"email": True}}
    assert _body({}, "on/account/email=on")["categories"] == {}


def test_no_email_switches_every_non_transactional_email_off() -> None:
    assert _body({"content": {"push": False}}, "action=no_email")["categories"] == {
        "content": {"push": False, "email": False},
        "social": {"email": False},
    }


def test_quiet_hours_are_set_cleared_or_refused() -> None:
    shown = _shown(quiet_hours={"push": QuietHours("22:00", "07:00")})
    assert _body({}, "", shown)["quiet_hours"] == {"push": {"start": "22:00", "end": "07:00"}}
    cleared = "quiet/push/start=&quiet/push/end=&quiet/email/start=21:30&quiet/email/end=06:15"
    assert _body({}, cleared, shown)["quiet_hours"] == {"email": {"start": "21:30", "end": "06:15"}}
    for bad in (
        "quiet/email/start=22:00",
        "quiet/email/start=22:00&quiet/email/end=",
        "quiet/email/start=7:00&quiet/email/end=08:00",
        "quiet/email/start=24:00&quiet/email/end=08:00",
        "quiet/email/start=22:00:00&quiet/email/end=08:00",
    ):
        with pytest.raises(ApiError) as caught:
            _body({}, bad)
        assert caught.value.code == "invalid_quiet_hours", bad
    assert _body({}, "muted=on")["muted"] is True
    assert _body({}, "", _shown(muted=True))["muted"] is True


def test_every_channel_kind_has_a_word_in_every_language() -> None:
    for lang, words in TEXTS.items():
        assert {f"kind.{kind}" for kind in CHANNEL_KINDS} <= set(words), lang
        assert set(words) == set(TEXTS["en"]), lang


def test_the_language_follows_the_locale_else_english() -> None:
    assert [language(x) for x in ("ru", "ru-RU", "RU", "en-GB", "de", None, "")] == [
        "ru",
        "ru",
        "ru",
        "en",
        "en",
        "en",
        "en",
    ]
