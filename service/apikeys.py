"""API keys of producer services: minting and verifying them.

Service identity is core, beside service/identity.py (users' and drivers' tokens): any
capability's service endpoints take `state.keys.require_scope(request, scope)`. Keys are
minted, listed and revoked by `bin/apikey` (service/ops/apikeys_cli.py).

A key is `mn_<8 hex: prefix>_<43 base64url: 256 random bits>`. It is shown once; the
table keeps its prefix (which finds the row and names the key in lists) and the SHA-256 of
the whole key. A fast hash is enough here: slow hashes protect guessable passwords, and
256 random bits cannot be guessed, so only a brute force of the hash itself remains, which
SHA-256 resists as well as any password hash.

Scopes: `events:write` (post events, read their status), `events:read` (read the status
of any producer's events and notifications: for operators and support tools),
`users:write` (recipients, topics, preferences), `users:read`. A key belongs to a
`producer`: events' idempotency keys are unique per producer, and with `events:write` a
producer sees only its own events, so a rotated key (new key, same producer) keeps both.
Creating and revoking a key each write an audit_log row (actor cli:<os user>).

Verification finds the row by prefix, compares hashes in constant time and refuses
revoked keys. A verified key is remembered per process (one KeyVerifier per State) for
CACHE_TTL_S seconds, so a revoked key is refused by every API process within that time,
and a busy producer costs one lookup per key, process and period.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.requests import HTTPConnection

from service import audit
from service.errors import ApiError, api_error
from service.identity import (
    API_KEY_ID_LENGTH,
    API_KEY_PREFIX,
    looks_like_api_key,
    split_api_key,
)
from service.sql import q

Scope = Literal["events:write", "events:read", "users:write", "users:read"]
SCOPES: tuple[Scope, ...] = ("events:write", "events:read", "users:write", "users:read")
PRODUCER = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
# Producers the service itself posts events as (the admin's mailings, the digest flush in
# sql/digests/functions/flush_digests.sql): a key of that name would share their
# idempotency keys and, with events:write, read their events.
RESERVED_PRODUCERS = frozenset({"admin", "digest"})
CACHE_TTL_S = 5.0
CACHE_SIZE = 10_000
# Failed key checks one address may make per window before it gets 429s.
MAX_KEY_FAILURES = 20
KEY_FAILURE_WINDOW_S = 60.0
# last_used_at is a hint for ops ("is this key still in use?"), not an audit log.
TOUCH_AFTER_S = 60.0


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def generate_key() -> tuple[str, str]:
    """A new key and its prefix."""
    prefix = secrets.token_hex(API_KEY_ID_LENGTH // 2)
    return f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: str
    prefix: str
    producer: str
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    prefix: str
    producer: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


async def create_key(
    conn: AsyncConnection[Any], producer: str, scopes: Sequence[str], *, actor: str
) -> CreatedKey:
    """A new key, stored with its audit row (action `apikey.create`, target its prefix)."""
    if not PRODUCER.fullmatch(producer):
        raise ValueError("a producer name is 1-64 of a-z 0-9 _ . -, starting with a-z or 0-9")
    if producer in RESERVED_PRODUCERS:
        names = ", ".join(sorted(RESERVED_PRODUCERS))
        raise ValueError(f"{producer!r} is the service's own producer name ({names} are taken)")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}")
    wanted = tuple(s for s in SCOPES if s in scopes)
    for _ in range(5):
        key, prefix = generate_key()
        params = {
            "producer": producer,
            "prefix": prefix,
            "secret_hash": hash_key(key),
            "scopes": list(wanted),
        }
        try:
            async with conn.transaction():
                await conn.execute(q("insert_api_key"), params)
                after = {"producer": producer, "scopes": list(wanted)}
                await audit.record(conn, actor, "apikey.create", prefix, after=after)
        except psycopg.errors.UniqueViolation:
            # Two keys with one 32-bit prefix: rare, and a new draw fixes it.
            continue
        return CreatedKey(key, prefix, producer, wanted)
    raise RuntimeError("could not draw an unused key prefix")


async def list_keys(conn: AsyncConnection[Any]) -> list[KeyInfo]:
    cur = await conn.execute(q("list_api_keys"))
    rows = await cur.fetchall()
    return [KeyInfo(r[0], r[1], tuple(r[2]), r[3], r[4], r[5]) for r in rows]


async def revoke_key(conn: AsyncConnection[Any], prefix: str, *, actor: str) -> datetime | None:
    """When the key was revoked (now, or earlier if it already was); None if unknown. A
    known key's revocation writes its audit row (action `apikey.revoke`)."""
    async with conn.transaction():
        cur = await conn.execute(q("revoke_api_key"), {"prefix": prefix})
        row = await cur.fetchone()
        if row is not None:
            after = {"producer": row[0], "revoked_at": row[1]}
            await audit.record(conn, actor, "apikey.revoke", prefix, after=after)
    return row[1] if row else None


# -- verification --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceCaller:
    key_id: str
    prefix: str
    producer: str
    scopes: frozenset[str]


class FailedKeyLimiter:
    """Failed key checks per client address, in fixed windows: past `max_failures` in
    `window_s` seconds, the address gets 429 `too_many_attempts` (with Retry-After) for
    every key not already verified, until its window ends.

    256-bit keys cannot be guessed, so this is not what keeps them safe; it keeps a
    guesser (or a broken client retrying a revoked key) from turning every request into
    a database lookup. Per process: with N workers an address gets up to N times the
    budget. Behind a proxy every caller shares the proxy's address, so the budget is
    generous. Keys already verified (in the cache) are never refused."""

    def __init__(
        self,
        max_failures: int = MAX_KEY_FAILURES,
        window_s: float = KEY_FAILURE_WINDOW_S,
        size: int = CACHE_SIZE,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._size = size
        # address -> (failures, when its window started)
        self._failures: dict[str, tuple[int, float]] = {}

    def locked_for(self, peer: str | None) -> int | None:
        """Whole seconds until `peer` may try again, or None if it may now."""
        entry = self._failures.get(peer or "")
        if entry is None or entry[0] < self.max_failures:
            return None
        left = entry[1] + self.window_s - time.monotonic()
        if left <= 0:
            del self._failures[peer or ""]
            return None
        return max(1, math.ceil(left))

    def failed(self, peer: str | None) -> None:
        now = time.monotonic()
        key = peer or ""
        count, started = self._failures.get(key, (0, now))
        if now - started >= self.window_s:
            count, started = 0, now
        if key not in self._failures and len(self._failures) >= self._size:
            self._failures.pop(next(iter(self._failures)))
        self._failures[key] = (count + 1, started)


class KeyVerifier:
    """The producer services calling, by their keys: verified against the table, and
    remembered for `ttl_s` (see the module docstring). One per process State."""

    def __init__(
        self, pool: AsyncConnectionPool, ttl_s: float = CACHE_TTL_S, size: int = CACHE_SIZE
    ) -> None:
        self._pool = pool
        self.ttl_s = ttl_s
        self._size = size
        # Keyed by the key's hash: the cache never holds a key itself.
        self._cache: dict[bytes, tuple[ServiceCaller, float]] = {}
        self.limiter = FailedKeyLimiter()

    async def require_scope(
        self, request: HTTPConnection, scope: Scope, *alternatives: Scope
    ) -> ServiceCaller:
        """The producer service calling, holding `scope` (or one of `alternatives`);
        otherwise a 401 or 403 (or a 429 while its address is locked out for failed keys:
        see FailedKeyLimiter)."""
        headers: Mapping[str, str] = request.headers
        authorization = headers.get("authorization")
        if authorization is None:
            raise api_error(
                "invalid_api_key",
                "Send 'Authorization: Bearer <API key>'.",
                www_authenticate="Bearer",
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise api_error("invalid_api_key", "Authorization must be 'Bearer <API key>'.")
        if not looks_like_api_key(token):
            if _looks_like_jwt(token):
                raise api_error("service_key_required")
            raise api_error("invalid_api_key", "The API key is malformed.")
        peer = request.client.host if request.client else None
        caller = await self._verify_from(token, peer)
        wanted = (scope, *alternatives)
        if caller.scopes.isdisjoint(wanted):
            raise api_error(
                "insufficient_scope",
                f"This endpoint needs scope {' or '.join(map(repr, wanted))}; the key has "
                f"{', '.join(sorted(caller.scopes))}.",
            )
        return caller

    async def _verify_from(self, key: str, peer: str | None) -> ServiceCaller:
        cached = self._cache.get(hash_key(key))
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        wait = self.limiter.locked_for(peer)
        if wait is not None:
            raise api_error("too_many_attempts", retry_after=str(wait))
        try:
            return await self.verify(key)
        except ApiError as exc:
            if exc.code == "invalid_api_key":
                self.limiter.failed(peer)
            raise

    async def verify(self, key: str) -> ServiceCaller:
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None:
            if now < cached[1]:
                return cached[0]
            del self._cache[digest]
        prefix = split_api_key(key)
        if prefix is None:
            raise api_error("invalid_api_key", "The API key is malformed.")
        async with self._pool.connection() as conn:
            cur = await conn.execute(q("find_api_key"), {"prefix": prefix})
            row = await cur.fetchone()
            # The comparison runs even for an unknown prefix, so timing does not tell
            # whether a prefix exists.
            stored = bytes(row[2]) if row else b"\0" * len(digest)
            if not hmac.compare_digest(stored, digest) or row is None:
                raise api_error("invalid_api_key", "Unknown API key.")
            key_id, producer, _, scopes, revoked_at, last_used_at = row
            if revoked_at is not None:
                raise api_error("invalid_api_key", "This API key has been revoked.")
            if last_used_at is None or time.time() - last_used_at.timestamp() > TOUCH_AFTER_S:
                await conn.execute(q("touch_api_key"), {"id": key_id})
        caller = ServiceCaller(str(key_id), prefix, producer, frozenset(scopes))
        if len(self._cache) >= self._size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[digest] = (caller, now + self.ttl_s)
        return caller


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")
