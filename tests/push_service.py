"""A Web Push push service on loopback, for the webpush channel's tests: what Chrome's FCM
or Firefox's autopush are to a real deployment (RFC 8030).

It holds the private side of each subscription it issued (a P-256 key pair and an auth
secret, made here as a browser makes them), and for every message it checks the VAPID
header (RFC 8292: an ES256 JWT verified with the key `k`, which must be the key the
subscription was made with; `aud` this origin, `exp` in the future and within 24 hours,
a `sub`), then decrypts the aes128gcm body (RFC 8291) with the subscription's own keys,
and records the result. A request it cannot verify or decrypt is refused (401, 403 or
400) and recorded as refused. It can be told to answer a status for a browser, or to fail
it a number of times first.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.webpush import b64url, b64url_decode
from tests.support import FAST_RETRY, VAPID_PUBLIC_KEY, notify_data, serve

DAY_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class Browser:
    """One subscription's private side, as the browser keeps it."""

    name: str
    key: ec.EllipticCurvePrivateKey
    auth: bytes
    # The applicationServerKey the page subscribed with: the only VAPID key accepted.
    server_key: str

    @property
    def p256dh(self) -> str:
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(public)


@dataclass(frozen=True, slots=True)
class Received:
    browser: str
    headers: dict[str, str]
    # The decrypted message, as JSON; None when refused.
    message: dict[str, Any] | None
    claims: dict[str, Any] | None
    status: int
    refused: str | None = None


@dataclass
class PushService:
    base: str = ""
    browsers: dict[str, Browser] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    # browser -> the status to answer (after checking and decrypting).
    status: dict[str, int] = field(default_factory=dict)
    # browser -> how many messages to answer 500 first.
    failures: dict[str, int] = field(default_factory=dict)
    retry_after: str | None = None

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/push/{name}", self._receive, methods=["POST"])])

    def subscribe(self, name: str, server_key: str = VAPID_PUBLIC_KEY) -> dict[str, Any]:
        """A new browser subscription, as PushSubscription.toJSON() gives it."""
        browser = Browser(name, ec.generate_private_key(ec.SECP256R1()), os.urandom(16), server_key)
        self.browsers[name] = browser
        return {
            "endpoint": f"{self.base}/push/{name}",
            "expirationTime": None,
            "keys": {"p256dh": browser.p256dh, "auth": b64url(browser.auth)},
        }

    def messages(self, name: str) -> list[dict[str, Any]]:
        """What this browser decrypted, in order."""
        return [r.message for r in self.received if r.browser == name and r.message]

    async def _receive(self, request: Request) -> Response:
        name = request.path_params["name"]
        headers = dict(request.headers)
        body = await request.body()
        browser = self.browsers.get(name)
        if browser is None:
            return self._refuse(name, headers, 404, "no such subscription")
        try:
            claims = self._vapid(headers.get("authorization", ""), browser)
        except PermissionError as exc:
            return self._refuse(name, headers, 403, str(exc))
        except ValueError as exc:
            return self._refuse(name, headers, 401, str(exc))
        if headers.get("content-encoding") != "aes128gcm" or "ttl" not in headers:
            return self._refuse(name, headers, 400, "aes128gcm and a TTL are required")
        try:
            plain = http_ece.decrypt(
                body, private_key=browser.key, auth_secret=browser.auth, version="aes128gcm"
            )
            message = msgspec.json.decode(plain)
        except Exception as exc:
            return self._refuse(name, headers, 400, f"cannot decrypt: {exc!r}")
        status = self.status.get(name, 201)
        if self.failures.get(name, 0) > 0:
            self.failures[name] -= 1
            status = 500
        self.received.append(Received(name, headers, message, claims, status))
        extra = {"Retry-After": self.retry_after} if self.retry_after and status >= 429 else {}
        if status == 201:
            extra["Location"] = f"{self.base}/messages/{len(self.received)}"
        # Error bodies quote the endpoint, as some push services do; it must not be logged.
        text = "" if status < 300 else f"{request.url} is gone or failing"
        return Response(text, status, extra)

    def _vapid(self, header: str, browser: Browser) -> dict[str, Any]:
        """The verified claims of `vapid t=<jwt>, k=<key>`; ValueError when it is not a
        valid token, PermissionError when it is another application server's."""
        scheme, _, rest = header.partition(" ")
        if scheme.lower() != "vapid":
            raise ValueError(f"not a vapid authorization: {scheme!r}")
        params = dict(p.strip().split("=", 1) for p in rest.split(",") if "=" in p)
        token, key = params.get("t", ""), params.get("k", "")
        if key != browser.server_key:
            raise PermissionError("k is not the key the subscription was made with")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                public,
                algorithms=["ES256"],
                audience=self.base,
                options={"require": ["aud", "exp", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise ValueError(f"bad VAPID token: {exc}") from None
        if claims["exp"] > time.time() + DAY_S:
            raise ValueError("exp more than 24 hours ahead")
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            raise ValueError("sub is no contact")
        return claims

    def _refuse(self, name: str, headers: dict[str, str], status: int, why: str) -> Response:
        self.received.append(Received(name, headers, None, None, status, why))
        return Response(why, status)


@asynccontextmanager
async def serving_push_service() -> AsyncIterator[PushService]:
    service = PushService()
    async with serve(service.app) as base:
        service.base = base
        yield service


def webpush_data(**notify_peers: Any) -> dict[str, Any]:
    """The test config's notification half with a webpush channel, which new_episode and
    payment_receipt are sent by (their templates have [webpush])."""
    data = notify_data(**notify_peers)
    data["channels"]["webpush"] = {"kind": "webpush", "transport": "webpush"} | FAST_RETRY
    data["event_types"]["new_episode"]["channels"] = ["webpush", "inbox"]
    data["event_types"]["payment_receipt"]["channels"] = ["webpush", "inbox"]
    return data
