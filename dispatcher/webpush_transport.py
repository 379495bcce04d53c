"""Web Push transport: a notification to each of the user's browsers through their push
services (RFC 8030), encrypted to the browser's keys (RFC 8291, aes128gcm, by http_ece)
and signed for the push service with the VAPID key of [notify.webpush] (RFC 8292: an
ES256 JWT, by PyJWT).

Per outbox row the type's `[webpush]` template is rendered into one JSON message
(WebPushMessage, docs/webpush.md) that the app's service worker shows. It goes to each of
the user's newest subscriptions, each encrypted on its own, with the headers a push
service reads: `TTL` (what is left of the type's ttl), `Urgency` (the type's urgency, else
its priority) and, when the template has a `topic`, `Topic` (a newer message of the same
topic replaces one not yet delivered).

Requests go over the dispatcher's own HTTP client (dispatcher/http_wire.py): one
keep-alive pool and one circuit breaker per push service (origin), so a push service that
is down costs its own subscriptions a retry without waiting for its timeouts, and the
others go on. Statuses map as everywhere (dispatcher/retry.py): 2xx delivered; 429 and
5xx retried (Retry-After honoured); 404 and 410 mean the subscription expired or was
withdrawn: it is forgotten after the batch (`after_batch`); any other 4xx (413: too large,
401/403: a VAPID key the push service refuses) is a permanent failure. Endpoints, keys
and message texts are never logged; an error names the push service's host only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import http_ece
import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec

from dispatcher import outbox
from dispatcher.breaker import CircuitBreaker
from dispatcher.http_transport import USER_AGENT, _tls_context
from dispatcher.http_wire import WebhookPool, WireError, WireTimeout
from dispatcher.retry import classify_status, parse_retry_after, trim_error, undeliverable
from dispatcher.transport_base import Delivery, Outcome, OutcomeKind, Pool, Transport
from service import webpush
from service.config.notify import Channel, EventTypeSettings, WebPushSettings
from service.notify.templates import RenderError, TypeTemplates

log = logging.getLogger(__name__)

# The most subscriptions one attempt is sent to (newest first); the claim's lease is sized
# from it (dispatcher/loop.py, lease_for).
SUBSCRIPTIONS_MAX = 5
# The push service's word that the subscription is gone: it is forgotten.
GONE_STATUSES = frozenset({404, 410})
# A push service must take a body of 4096 bytes (RFC 8291 §4); aes128gcm's header (86
# bytes with our key id), the padding delimiter and the tag leave this much for the JSON.
PAYLOAD_MAX = 4096 - 86 - 1 - 16
# VAPID tokens: valid for 12 hours (a push service refuses more than 24), renewed with an
# hour left.
TOKEN_LIFETIME_S = 12 * 3600
TOKEN_RENEW_S = 3600
REDACTED = "[redacted]"

_encode = msgspec.json.Encoder().encode


class WebPushMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the service worker's `push` event gets (`event.data.json()`): the rendered
    `[webpush]` template and the ids to mark it seen with (POST /v1/seen, tag
    `notify.seen_tag`, id = notification_id)."""

    notification_id: str
    type: str
    title: str
    body: str
    link: str | None = None
    icon: str | None = None
    # The template's topic: showNotification()'s tag, so a newer one replaces it.
    tag: str | None = None
    data: dict[str, str] = {}


class Undeliverable(Exception):
    """This row can never become a valid push (a permanent failure)."""


@dataclass(frozen=True, slots=True)
class _Answer:
    """One push service's answer for one subscription."""

    host: str
    kind: OutcomeKind
    started_at: datetime
    t0: float
    t1: float
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    endpoint: str = ""


class _Vapid:
    """The application server's VAPID identity: a token per push service, renewed."""

    def __init__(self, settings: WebPushSettings) -> None:
        self._key: ec.EllipticCurvePrivateKey = webpush.private_key(settings.vapid_private_key)
        self._public = webpush.public_key_text(self._key)
        self._subject = settings.vapid_subject
        self._tokens: dict[str, tuple[str, float]] = {}

    def authorization(self, origin: str) -> str:
        now = time.time()
        token, until = self._tokens.get(origin, ("", 0.0))
        if until - now < TOKEN_RENEW_S:
            until = int(now) + TOKEN_LIFETIME_S
            claims = {"aud": origin, "exp": until, "sub": self._subject}
            token = jwt.encode(claims, self._key, algorithm="ES256")
            self._tokens[origin] = (token, until)
        return f"vapid t={token}, k={self._public}"


def encrypt(message: bytes, p256dh: str, auth: str) -> bytes:
    """The aes128gcm body of `message` for one subscription: a new sender key and salt
    per message, as RFC 8291 requires."""
    return bytes(
        http_ece.encrypt(
            message,
            salt=os.urandom(16),
            private_key=ec.generate_private_key(ec.SECP256R1()),
            dh=webpush.b64url_decode(p256dh),
            auth_secret=webpush.b64url_decode(auth),
            version="aes128gcm",
        )
    )


def topic_header(topic: str) -> str:
    """RFC 8030's Topic is at most 32 base64url characters: a digest of the template's."""
    return webpush.b64url(hashlib.sha256(topic.encode()).digest()[:24])


class _PushService:
    """One push service (an origin): its keep-alive pool and its breaker."""

    def __init__(self, origin: str, channel_name: str, channel: Channel, vapid: _Vapid) -> None:
        self.origin = origin
        self.host = urlsplit(origin).hostname or origin
        self.where = f"channel {channel_name}, push service {self.host}"
        self.vapid = vapid
        self.timeout = channel.timeout.total_seconds()
        self.breaker = CircuitBreaker(channel.breaker)
        self.probing = False
        self.pool = WebhookPool(
            origin,
            channel.concurrency,
            headers={
                "User-Agent": USER_AGENT,
                "Content-Type": "application/octet-stream",
                "Content-Encoding": "aes128gcm",
            },
            tls=_tls_context() if origin.startswith("https:") else None,
        )

    def skipped(self, endpoint: str) -> _Answer | None:
        """The answer for a subscription not sent now, its push service's breaker open
        (a half-open one lets one probe through); None: send."""
        wait = self.breaker.ready_in()
        if wait == 0 and not (self.breaker.state == "half_open" and self.probing):
            return None
        now = time.perf_counter()
        return _Answer(
            self.host,
            "retry",
            datetime.now(UTC),
            now,
            now,
            error="circuit open",
            retry_after=wait or None,
            endpoint=endpoint,
        )

    async def push(self, endpoint: str, headers: dict[str, str], body: bytes) -> _Answer:
        probe = self.breaker.state == "half_open"
        self.probing = self.probing or probe
        try:
            answer = await self._exchange(endpoint, headers, body)
        finally:
            if probe:
                self.probing = False
        self._record(answer)
        return answer

    async def _exchange(self, endpoint: str, headers: dict[str, str], body: bytes) -> _Answer:
        parts = urlsplit(endpoint)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        headers = headers | {"Authorization": self.vapid.authorization(self.origin)}
        try:
            response = await self.pool.post(headers, body, self.timeout, path)
        except WireTimeout:
            return self._answer(endpoint, "retry", started_at, t0, error="timeout")
        except WireError as exc:
            return self._answer(endpoint, "retry", started_at, t0, error=str(exc))
        kind = classify_status(response.status)
        if kind == "delivered":
            return self._answer(endpoint, kind, started_at, t0, response.status)
        # The answer may quote the endpoint, whose path is the subscription's secret.
        text = response.body.decode("utf-8", "replace")
        for secret in (endpoint, path, parts.path):
            if len(secret) > 1:
                text = text.replace(secret, REDACTED)
        error = f"HTTP {response.status}: {text}" if text.strip() else f"HTTP {response.status}"
        retry_after = None
        if kind == "retry":
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        return self._answer(endpoint, kind, started_at, t0, response.status, error, retry_after)

    def _answer(
        self,
        endpoint: str,
        kind: OutcomeKind,
        started_at: datetime,
        t0: float,
        status: int | None = None,
        error: str | None = None,
        retry_after: float | None = None,
    ) -> _Answer:
        t1 = time.perf_counter()
        return _Answer(self.host, kind, started_at, t0, t1, status, error, retry_after, endpoint)

    def _record(self, answer: _Answer) -> None:
        before = self.breaker.state
        if answer.kind == "retry":
            self.breaker.record(0, 1, f"HTTP {answer.status}" if answer.status else answer.error)
        else:
            # A refusal (a gone subscription included) shows the push service is up.
            self.breaker.record(1, 0)
        if self.breaker.state == before:
            return
        if self.breaker.state == "open":
            log.warning(
                "%s: circuit open after %d failures in a row (last: %s); probing again in %.1f s",
                self.where,
                self.breaker.failures,
                self.breaker.last_error,
                self.breaker.ready_in(),
            )
        elif self.breaker.state == "closed":
            log.info("%s: circuit closed, sending to it again", self.where)


class _Channel:
    def __init__(
        self,
        name: str,
        channel: Channel,
        templates: Mapping[str, TypeTemplates],
        urgency: Mapping[str, str],
        vapid: _Vapid,
    ) -> None:
        self.name = name
        self.channel = channel
        self.templates = templates
        self.urgency = urgency
        self.vapid = vapid
        self.services: dict[str, _PushService] = {}

    def service(self, endpoint: str) -> _PushService:
        key = webpush.origin(endpoint)
        found = self.services.get(key)
        if found is None:
            found = self.services[key] = _PushService(key, self.name, self.channel, self.vapid)
        return found

    async def send(self, delivery: Delivery) -> Outcome:
        try:
            return await self._send(delivery)
        except (RenderError, Undeliverable) as exc:
            return undeliverable(delivery, str(exc))
        except Exception as exc:
            # A bug must cost this row a retry, not the whole batch.
            log.exception("channel %s: outbox row %d failed", self.name, delivery.outbox_id)
            return Outcome(
                delivery.outbox_id,
                "retry",
                datetime.now(UTC),
                0.0,
                error=trim_error(f"transport error: {type(exc).__name__}: {exc}"),
            )

    def _message(self, delivery: Delivery) -> tuple[bytes, str | None]:
        """The JSON message and the template's topic."""
        payload = delivery.payload
        type_name = str(payload.get("type"))
        templates = self.templates.get(type_name)
        if templates is None:
            raise Undeliverable(f"no templates for notification type {type_name!r}")
        try:
            context = {
                **(payload.get("data") or {}),
                "recipient": {"id": payload["user_id"], "locale": payload.get("locale")},
                "notification_id": payload["notification_id"],
                "event_id": payload["event_id"],
            }
        except (KeyError, TypeError) as exc:
            raise Undeliverable(f"malformed payload: {exc!r}") from None
        rendered = templates.render("webpush", payload.get("locale"), context)
        topic = rendered.get("topic") or None
        message = WebPushMessage(
            notification_id=str(payload["notification_id"]),
            type=type_name,
            title=rendered["title"],
            body=rendered["body"],
            link=rendered.get("link") or None,
            icon=rendered.get("icon") or None,
            tag=topic,
            data=rendered.get("data", {}),
        )
        body = _encode(message)
        if len(body) > PAYLOAD_MAX:
            raise Undeliverable(
                f"the message is {len(body)} bytes of JSON; a push service takes {PAYLOAD_MAX}"
            )
        return body, topic

    def _headers(self, delivery: Delivery, topic: str | None) -> dict[str, str]:
        expires = delivery.payload.get("expires_at")
        ttl = 0
        if isinstance(expires, str):
            left = datetime.fromisoformat(expires) - datetime.now(UTC)
            ttl = max(0, int(left.total_seconds()))
        headers = {
            "TTL": str(ttl),
            "Urgency": self.urgency.get(str(delivery.payload.get("type")), "normal"),
        }
        if topic:
            headers["Topic"] = topic_header(topic)
        return headers

    async def _send(self, delivery: Delivery) -> Outcome:
        subscriptions = delivery.payload.get("subscriptions") or []
        if not isinstance(subscriptions, list) or not subscriptions:
            raise Undeliverable("no web push subscription")
        message, topic = self._message(delivery)
        headers = self._headers(delivery, topic)
        # The claim lists subscriptions oldest first; the newest are the likeliest in use.
        chosen = [s for s in subscriptions[::-1][:SUBSCRIPTIONS_MAX] if isinstance(s, dict)]
        answers = await asyncio.gather(*(self._one(s, message, headers) for s in chosen))
        return _outcome(delivery, answers)

    async def _one(self, sub: dict[str, Any], message: bytes, headers: dict[str, str]) -> _Answer:
        endpoint = str(sub.get("endpoint"))
        service = self.service(endpoint)
        skipped = service.skipped(endpoint)
        if skipped is not None:
            return skipped
        try:
            body = encrypt(message, str(sub.get("p256dh")), str(sub.get("auth")))
        except (ValueError, TypeError):
            now = time.perf_counter()
            # Checked when registered, so only a row altered since: refused, not retried.
            return _Answer(
                service.host, "failed", datetime.now(UTC), now, now, error="invalid keys"
            )
        return await service.push(endpoint, headers, body)


def _outcome(delivery: Delivery, answers: Sequence[_Answer]) -> Outcome:
    """One attempt over the user's subscriptions: delivered if any push service took it
    (the user has the notification), else retried if any may take it later, else failed.
    Gone subscriptions are reported to be forgotten whatever the rest did."""
    gone = tuple(a.endpoint for a in answers if a.kind == "failed" and a.status in GONE_STATUSES)
    delivered = [a for a in answers if a.kind == "delivered"]
    retry = [a for a in answers if a.kind == "retry"]
    if delivered:
        kind: OutcomeKind = "delivered"
        decisive = delivered[:1]
    elif retry:
        kind, decisive = "retry", retry
    else:
        kind, decisive = "failed", list(answers)
    error = None
    if kind != "delivered":
        labels = [f"subscription {n} at {a.host}: {a.error}" for n, a in enumerate(answers, 1)]
        error = "; ".join(labels) if len(gone) < len(answers) else "no valid subscription"
    retry_after = None
    waits = [a.retry_after for a in retry]
    if kind == "retry" and waits and all(w is not None for w in waits):
        # A floor only if every push service asked for one.
        retry_after = min(w for w in waits if w is not None)
    last = decisive[-1]
    return Outcome(
        delivery.outbox_id,
        kind,
        min(a.started_at for a in answers),
        (max(a.t1 for a in answers) - min(a.t0 for a in answers)) * 1000.0,
        status_code=last.status,
        error=trim_error(error) if error else None,
        retry_after=retry_after,
        provider=last.host,
        invalid_tokens=gone,
    )


class WebPushTransport(Transport):
    """Delivers for every channel whose transport is "webpush"."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        templates: Mapping[str, TypeTemplates],
        settings: WebPushSettings,
        event_types: Mapping[str, EventTypeSettings],
    ) -> None:
        vapid = _Vapid(settings)
        urgency = {name: t.push_urgency for name, t in event_types.items()}
        self._channels = {
            name: _Channel(name, channel, templates, urgency, vapid)
            for name, channel in channels.items()
            if channel.transport == "webpush"
        }

    async def deliver(self, consumer: str, batch: Sequence[Delivery]) -> list[Outcome]:
        channel = self._channels[consumer]
        return list(await asyncio.gather(*(channel.send(d) for d in batch)))

    async def after_batch(
        self, consumer: str, batch: Sequence[Delivery], outcomes: Sequence[Outcome], pool: Pool
    ) -> None:
        """Forget the subscriptions whose push service answered 404 or 410."""
        await outbox.forget_gone_contacts(
            pool, consumer, batch, outcomes, outbox.remove_webpush_subscriptions, "subscriptions"
        )

    async def close(self) -> None:
        for channel in self._channels.values():
            for service in channel.services.values():
                await service.pool.close()
