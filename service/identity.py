"""Who is calling: the subject of a seen mark comes from verified identity only.

Two sources, tried in order:
1. `Authorization: Bearer <JWT>` from the auth service (HS256 with a shared secret, or
   RS256 with a PEM public key or a JWKS file); signature, `exp`, `aud`, `iss` checked.
2. Identity headers from a trusted gateway, only when enabled and only from
   `trusted_peers`: anyone else could set these headers themselves.
With neither, the caller is anonymous.

Producer services use API keys instead (`mn_<prefix>_<secret>`, service/apikeys.py),
on their own endpoints only. A key is told from a JWT by its format alone, so a user
endpoint refuses one clearly (`client_identity_required`) rather than as a bad JWT, and
a service endpoint refuses a JWT as `service_key_required`.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from service.config.base import ROOT, ConfigError, EventType, refuse_unsafe_secret
from service.config.core import IdentitySettings
from service.errors import ApiError, api_error
from service.text_rules import unsafe_at
from service.wire import AnonymousSubject, ClientSubject, DriverSubject, Subject

TOKEN_CACHE_SIZE = 50_000

# API keys: "mn_" + 8 hex characters (the public prefix that finds the key's row) + "_" +
# 43 base64url characters (256 random bits). A JWT always starts with "eyJ" (its header
# is a base64 JSON object), so the two never look alike.
API_KEY_PREFIX = "mn_"
API_KEY_ID_LENGTH = 8
API_KEY_SECRET_LENGTH = 43
API_KEY_LENGTH = len(API_KEY_PREFIX) + API_KEY_ID_LENGTH + 1 + API_KEY_SECRET_LENGTH
_HEX = frozenset("0123456789abcdef")
_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True, slots=True)
class Caller:
    kind: EventType
    subject: Subject
    # The dedupe key of the subject: stable, and what Kafka partitions by.
    key: str


ANONYMOUS = Caller("anonymous", AnonymousSubject(), "anonymous")


def caller_for(subject: Subject) -> Caller:
    if isinstance(subject, ClientSubject):
        return Caller("client", subject, f"client:{subject.user_id}")
    if isinstance(subject, DriverSubject):
        return Caller("driver", subject, f"driver:{subject.db_id}:{subject.uuid}")
    return ANONYMOUS


def looks_like_api_key(token: str) -> bool:
    """Whether a bearer token is meant as a service API key (well-formed or not)."""
    return token.startswith(API_KEY_PREFIX)


def split_api_key(token: str) -> str | None:
    """The public prefix of a well-formed API key, or None."""
    if len(token) != API_KEY_LENGTH or not token.startswith(API_KEY_PREFIX):
        return None
    start = len(API_KEY_PREFIX)
    prefix = token[start : start + API_KEY_ID_LENGTH]
    separator = token[start + API_KEY_ID_LENGTH]
    secret = token[start + API_KEY_ID_LENGTH + 1 :]
    if separator != "_" or not set(prefix) <= _HEX or not set(secret) <= _BASE64URL:
        return None
    return prefix


def _nonempty(value: Any) -> str | None:
    # Control characters (NUL above all, which PostgreSQL refuses in text) never make a
    # valid id, even in a correctly signed token: service/text_rules.py is the one rule.
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value) if isinstance(value, str) else _int_text(value)
        if text and unsafe_at(text) is None:
            return text
    return None


def _int_text(value: int) -> str:
    # str() of an int past 4300 digits raises ValueError; no id is that long anyway.
    try:
        return str(value)
    except ValueError:
        return ""


def _id_list(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        return []
    ids = (_nonempty(v.strip() if isinstance(v, str) else v) for v in items)
    return [i for i in ids if i is not None]


class Authenticator:
    def __init__(self, settings: IdentitySettings, environment: str) -> None:
        self._settings = settings
        self._jwt = settings.jwt
        self._hs_key: str | None = None
        self._rs_keys: dict[str | None, Any] = {}
        if self._jwt is not None:
            secret = self._jwt.secret
            refuse_unsafe_secret("identity.jwt.secret", secret, environment)
            if "HS256" in self._jwt.algorithms:
                if not secret:
                    raise ConfigError("identity.jwt.secret: required for HS256")
                self._hs_key = secret
            if "RS256" in self._jwt.algorithms:
                self._rs_keys = self._load_rs_keys()
        self._cache: dict[str, tuple[Caller, float]] = {}
        self._peers = [
            ipaddress.ip_network(p, strict=False) for p in settings.gateway.trusted_peers
        ]

    def _load_rs_keys(self) -> dict[str | None, Any]:
        assert self._jwt is not None
        keys: dict[str | None, Any] = {}
        if self._jwt.public_key_file:
            keys[None] = (ROOT / Path(self._jwt.public_key_file)).read_bytes()
        if self._jwt.jwks_file:
            data = json.loads((ROOT / Path(self._jwt.jwks_file)).read_text())
            for jwk in jwt.PyJWKSet.from_dict(data).keys:
                keys[jwk.key_id] = jwk.key
        if not keys:
            raise ConfigError("identity.jwt: RS256 needs public_key_file or jwks_file")
        return keys

    def authenticate(self, headers: Mapping[str, str], peer: str | None) -> Caller:
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise api_error("invalid_token", "Authorization must be 'Bearer <token>'.")
            return self._verified(token.strip())
        if self._settings.gateway.enabled and self._trusted(peer):
            subject = self._from_gateway(headers)
            if subject is not None:
                return caller_for(subject)
        return ANONYMOUS

    def _trusted(self, peer: str | None) -> bool:
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self._peers)

    def _verified(self, token: str) -> Caller:
        # A client sends the same token with every request until it expires; checking its
        # signature each time was a third of the API's CPU. The same bytes under the same
        # key always verify the same way, so remember the outcome and re-check only `exp`.
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            caller, expires = cached
            if now <= expires:
                return caller
            del self._cache[token]
        # Only reached on a cache miss, so the hot path never pays for this check.
        if looks_like_api_key(token):
            raise api_error(
                "client_identity_required",
                "This endpoint takes a user's token; a service API key is not accepted here.",
            )
        subject, expires = self._verify(token)
        caller = caller_for(subject)
        if len(self._cache) >= TOKEN_CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[token] = (caller, expires)
        return caller

    def _verify(self, token: str) -> tuple[Subject, float]:
        settings = self._jwt
        if settings is None:
            raise api_error("invalid_token", "Bearer tokens are not accepted here.")
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            # The key is chosen by algorithm so an RS256 public key can never be used as an
            # HMAC secret (the classic algorithm-confusion attack).
            if alg == "HS256" and self._hs_key is not None:
                key: Any = self._hs_key
            elif alg == "RS256" and self._rs_keys:
                kid = header.get("kid")
                key = self._rs_keys.get(kid) or self._rs_keys.get(None)
                if key is None:
                    raise jwt.InvalidKeyError(f"unknown key id {kid!r}")
            else:
                raise jwt.InvalidAlgorithmError(f"algorithm {alg!r} is not accepted")
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": ["exp", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise api_error("invalid_token", f"Invalid bearer token: {exc}.") from None
        # PyJWT takes any JSON integer as `exp`, and 10**400 is one: as a float it
        # overflows. No real token lives that long, so it is refused like any bad claim
        # (huge `nbf` and `iat` are in the future, which PyJWT already refuses).
        out_of_range = api_error("invalid_token", "Invalid bearer token: `exp` is out of range.")
        try:
            expires = float(claims["exp"]) + settings.leeway.total_seconds()
        except (OverflowError, TypeError, ValueError):
            raise out_of_range from None
        if not math.isfinite(expires):
            raise out_of_range
        return self._subject_from_claims(claims), expires

    def _subject_from_claims(self, claims: Mapping[str, Any]) -> Subject:
        names = self._jwt.claims if self._jwt else None
        assert names is not None
        kind = claims.get(names.kind)
        if kind == "client":
            user_id = _nonempty(claims.get(names.user_id))
            if user_id is None:
                raise api_error("invalid_token", f"A client token needs claim {names.user_id!r}.")
            return ClientSubject(
                user_id=user_id,
                uid=_nonempty(claims.get(names.uid)),
                bound_uids=_id_list(claims.get(names.bound_uids)),
                phone_id=_nonempty(claims.get(names.phone_id)),
            )
        if kind == "driver":
            db_id = _nonempty(claims.get(names.db_id))
            uuid = _nonempty(claims.get(names.uuid))
            if db_id is None or uuid is None:
                raise api_error(
                    "invalid_token", f"A driver token needs claims {names.db_id!r}, {names.uuid!r}."
                )
            return DriverSubject(db_id=db_id, uuid=uuid)
        raise api_error("invalid_token", f"Claim {names.kind!r} must be 'client' or 'driver'.")

    def _from_gateway(self, headers: Mapping[str, str]) -> Subject | None:
        names = self._settings.gateway.headers
        user_id = _nonempty(headers.get(names.user_id.lower()))
        if user_id is not None:
            return ClientSubject(
                user_id=user_id,
                uid=_nonempty(headers.get(names.uid.lower())),
                bound_uids=_id_list(headers.get(names.bound_uids.lower(), "")),
                phone_id=_nonempty(headers.get(names.phone_id.lower())),
            )
        db_id = _nonempty(headers.get(names.db_id.lower()))
        uuid = _nonempty(headers.get(names.uuid.lower()))
        if db_id is not None and uuid is not None:
            return DriverSubject(db_id=db_id, uuid=uuid)
        return None


def check_caller(caller: Caller, tag_type: EventType, tag: str) -> ApiError | None:
    """Why this caller may not mark a tag of this type, or None when it may."""
    if tag_type == "anonymous" or caller.kind == tag_type:
        return None
    if caller.kind == "anonymous":
        return api_error(
            "unauthenticated", f"Tag {tag!r} takes {tag_type} marks; identify the caller."
        )
    return api_error("wrong_event_type", f"Tag {tag!r} takes {tag_type} marks, not {caller.kind}.")
