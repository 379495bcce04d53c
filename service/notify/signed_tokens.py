"""Signed, expiring, single-purpose tokens: the credentials in links and stream URLs.

An HS256 JWT under `notify.unsubscribe_secret` with its purpose as the audience, so a
token made for one use (an unsubscribe link, a preference-center link, an inbox stream)
is refused by every other. Used by service/notify/unsubscribe.py and the modules that
follow its pattern; they name their own claims.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

import jwt

from service.config.base import ConfigError, refuse_unsafe_secret
from service.config.notify import NotifySettings

ALGORITHM = "HS256"
# Links are pasted and re-wrapped by mail clients; anything longer is not one of ours.
MAX_TOKEN_CHARS = 2048
# A compact JWS: three base64url parts, unpadded, as sign() writes them. Published in
# /openapi.json; anything else is refused before it is decoded. `(?!\n)`: Python's `$`
# also matches before a final newline, JSON Schema's does not.
COMPACT_JWS_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$(?!\n)"
_COMPACT_JWS = re.compile(COMPACT_JWS_PATTERN)


class InvalidToken(ValueError):
    """The token is malformed, altered, expired or made for another purpose."""


def signing_key(notify: NotifySettings, environment: str | None) -> str:
    """The secret, refused if missing, or a development one or a placeholder outside
    development (service/config/base.py).

    `environment` None skips that check, for a signer that is not told its
    environment; the API, which verifies, always is, so a token signed with a
    development secret never works outside development.
    """
    secret = notify.unsubscribe_secret
    if not secret:
        raise ConfigError("notify.unsubscribe_secret: required to sign links and stream tokens")
    refuse_unsafe_secret("notify.unsubscribe_secret", secret, environment)
    return secret


def sign(
    notify: NotifySettings,
    audience: str,
    claims: dict[str, Any],
    ttl: timedelta,
    *,
    environment: str | None = None,
    now: float | None = None,
) -> str:
    """A token for `audience` carrying `claims`, valid for `ttl`."""
    # No `iat`: the token is part of a URL, every character counts.
    issued = time.time() if now is None else now
    body = claims | {"aud": audience, "exp": int(issued + ttl.total_seconds())}
    return jwt.encode(body, signing_key(notify, environment), algorithm=ALGORITHM)


def verify(
    notify: NotifySettings, audience: str, token: str, *, environment: str
) -> dict[str, Any]:
    """The claims of a valid token for `audience`; InvalidToken says why it is refused."""
    key = signing_key(notify, environment)
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("too long")
    if not _COMPACT_JWS.match(token):
        raise InvalidToken("not a signed token")
    try:
        # One algorithm only: "none" and RS256 tokens are refused whatever they claim.
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM], audience=audience, options={"require": ["exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("expired") from None
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    return claims


def string_claims(claims: dict[str, Any], *names: str) -> list[str]:
    """The named claims, each a non-empty string, or InvalidToken."""
    values = [claims.get(name) for name in names]
    if not all(isinstance(v, str) and v for v in values):
        raise InvalidToken("missing claims")
    return [str(v) for v in values]
