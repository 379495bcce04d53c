"""Unsubscribe tokens: what a link carries, and every way a link is refused."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest

from service.config.base import ConfigError
from service.config.notify import NotifySettings
from service.notify.unsubscribe import (
    AUDIENCE,
    InvalidLink,
    Unsubscribe,
    make_token,
    read_token,
    unsubscribe_url,
)

SECRET = "unit-unsubscribe-secret-0123456789abcdef"
NOTIFY = NotifySettings(public_url="https://mail.example/", unsubscribe_secret=SECRET)


def test_a_link_carries_the_user_category_and_channel() -> None:
    url = unsubscribe_url(NOTIFY, "user-7", "content")
    prefix = "https://mail.example/v1/unsubscribe/"
    assert url.startswith(prefix)
    token = url.removeprefix(prefix)
    assert "/" not in token
    assert read_token(NOTIFY, token, environment="production") == Unsubscribe(
        "user-7", "content", "email"
    )
    other = make_token(NOTIFY, "user-7", "content", channel="newsletter-email")
    assert read_token(NOTIFY, other, environment="test").channel == "newsletter-email"
    # It goes into a header line of every marketing email.
    assert len(url) < 250


def test_a_link_expires_after_the_ttl() -> None:
    notify = NotifySettings(unsubscribe_secret=SECRET, unsubscribe_ttl=timedelta(days=2))
    fresh = make_token(notify, "u", "content", now=time.time() - timedelta(days=1).total_seconds())
    assert read_token(notify, fresh, environment="test").user_id == "u"
    stale = make_token(notify, "u", "content", now=time.time() - timedelta(days=3).total_seconds())
    with pytest.raises(InvalidLink, match="expired"):
        read_token(notify, stale, environment="test")


def test_an_altered_or_foreign_token_is_refused() -> None:
    token = make_token(NOTIFY, "user-7", "content")
    header, claims, signature = token.split(".")
    # Another user's claims under this token's signature.
    forged_claims = make_token(NOTIFY, "user-8", "content").split(".")[1]
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    foreign_secret = NotifySettings(unsubscribe_secret="another-secret-0123456789abcdef0123")
    now = int(time.time())
    refused = {
        "forged claims": f"{header}.{forged_claims}.{signature}",
        "altered signature": f"{header}.{claims}.{flipped}",
        "other secret": make_token(foreign_secret, "user-7", "content"),
        "unsigned": jwt.encode(
            {"sub": "user-7", "cat": "content", "ch": "email", "aud": AUDIENCE, "exp": now + 60},
            "",
            algorithm="none",
        ),
        "other audience": jwt.encode(
            {"sub": "user-7", "cat": "content", "ch": "email", "aud": "x", "exp": now + 60},
            SECRET,
            algorithm="HS256",
        ),
        "no category": jwt.encode(
            {"sub": "user-7", "ch": "email", "aud": AUDIENCE, "exp": now + 60},
            SECRET,
            algorithm="HS256",
        ),
        "no expiry": jwt.encode(
            {"sub": "user-7", "cat": "content", "ch": "email", "aud": AUDIENCE},
            SECRET,
            algorithm="HS256",
        ),
        "garbage": "not-a-token",
        "too long": token + "A" * 3000,
    }
    for what, bad in refused.items():
        with pytest.raises(InvalidLink):
            read_token(NOTIFY, bad, environment="test")
            pytest.fail(f"{what} was accepted")


def test_no_secret_no_links() -> None:
    notify = NotifySettings(unsubscribe_secret=None)
    with pytest.raises(ConfigError, match="unsubscribe_secret: required"):
        unsubscribe_url(notify, "u", "content")
    with pytest.raises(ConfigError, match="unsubscribe_secret: required"):
        read_token(notify, make_token(NOTIFY, "u", "content"), environment="development")


def test_a_development_secret_works_only_in_development() -> None:
    dev = NotifySettings(unsubscribe_secret="dev-only-unsubscribe-secret-0123456789")
    token = make_token(dev, "u", "content", environment="development")
    assert read_token(dev, token, environment="development").user_id == "u"
    for environment in ("test", "production"):
        with pytest.raises(ConfigError, match="development secret"):
            read_token(dev, token, environment=environment)
        with pytest.raises(ConfigError, match="development secret"):
            make_token(dev, "u", "content", environment=environment)
