"""Provider transport: SMS and push through HTTP providers, a primary and its fallbacks.

Per outbox row the type's template is rendered for the channel's kind and the result is
POSTed as the documented JSON request (service/notify/provider_api.py, docs/providers.md),
signed per Standard Webhooks with the provider's own secret. The message is offered to
the channel's providers in their configured order: a provider that answers 2xx takes it;
one that cannot take it right now (network error, timeout, 408, 429, 5xx) hands it on to
the next one within the same attempt; a permanent refusal (other 4xx) ends the attempt,
as another provider would refuse the same request. Only when every provider failed is the
row retried later, by the claim loop's backoff.

Every provider has its own keep-alive pool, concurrency limit and circuit breaker: a
provider whose breaker is open is skipped, so while the primary is down messages go
straight to the fallback instead of each waiting for the primary's timeout first. A
provider an operator switched off (provider_controls, service/ops/controls.py) is skipped
too: the claim lists those in the payload's `providers_off`, so sending needs no
database. With every provider switched off, an attempt fails as in an outage (retried).

A push goes to each of the recipient's newest devices (one request each, with its own
stable webhook-id); tokens a provider calls invalid (404/410) are reported in the outcome,
and forgotten after the batch (`after_batch`). Phone numbers, tokens and message texts are
never logged, and are blanked out of provider answers kept in the attempt log.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import msgspec
from standardwebhooks import Webhook

from dispatcher import outbox
from dispatcher.breaker import CircuitBreaker
from dispatcher.http_transport import USER_AGENT, _tls_context
from dispatcher.http_wire import WebhookPool, WireError, WireTimeout
from dispatcher.retry import (
    classify_status,
    parse_retry_after,
    trim_error,
    undeliverable,
)
from dispatcher.transport_base import Delivery, Outcome, OutcomeKind, Pool, Transport
from service.config.notify import Channel, Provider
from service.notify.provider_api import PushMessage, SmsMessage
from service.notify.templates import RenderError, TypeTemplates

log = logging.getLogger(__name__)

# The most devices one push attempt is sent to (newest first); the claim's lease is sized
# from it (dispatcher/loop.py, lease_for).
PUSH_DEVICES_MAX = 5
# Push answers that mean the token is dead: the device is forgotten.
INVALID_TOKEN_STATUSES = frozenset({404, 410})
REDACTED = "[redacted]"
REDACT_MIN = 4

_encode = msgspec.json.Encoder().encode


class Undeliverable(Exception):
    """This row can never become a valid request (a permanent failure)."""


@dataclass(frozen=True, slots=True)
class _Answer:
    """One provider's answer to one request."""

    provider: str
    kind: OutcomeKind
    started_at: datetime
    t0: float
    t1: float
    status: int | None = None
    # For the attempt log: with the provider's answer, recipient data blanked out.
    error: str | None = None
    retry_after: float | None = None
    # "device <n>, " in a push's errors.
    device: str = ""


class _Provider:
    def __init__(self, channel_name: str, channel: Channel, provider: Provider) -> None:
        self.name = provider.name
        self.where = f"channel {channel_name}, provider {provider.name}"
        self.timeout = (provider.timeout or channel.timeout).total_seconds()
        self.signer = Webhook(provider.secret)
        self.breaker = CircuitBreaker(provider.breaker or channel.breaker)
        # A half-open breaker lets one request probe the provider; the rest fail over.
        self.probing = False
        self.slots = asyncio.Semaphore(channel.concurrency)
        # As wide as the slots, so the pool never makes a request that holds a slot wait.
        self.pool = WebhookPool(
            provider.url,
            channel.concurrency,
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
            tls=_tls_context() if provider.url.startswith("https:") else None,
        )

    def usable(self) -> bool:
        """Whether messages may be offered to it now (its breaker lets them through)."""
        if self.breaker.ready_in() > 0:
            return False
        return self.breaker.state != "half_open" or not self.probing

    async def post(
        self, message_id: str, body: bytes, redact: Sequence[str], *, force: bool
    ) -> _Answer | None:
        """Send one request; None when the breaker opened while it waited for a slot (and
        `force` is off): the caller offers the message to the next provider instead."""
        async with self.slots:
            if not force and not self.usable():
                return None
            probe = self.breaker.state == "half_open" and not self.probing
            self.probing = self.probing or probe
            try:
                answer = await self._exchange(message_id, body, redact)
            finally:
                if probe:
                    self.probing = False
        self._record(answer)
        return answer

    async def _exchange(self, message_id: str, body: bytes, redact: Sequence[str]) -> _Answer:
        # Signed once the slot is ours, so the timestamp is fresh however long the wait.
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        headers = {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(started_at.timestamp())),
            "webhook-signature": self.signer.sign(message_id, started_at, body.decode()),
        }
        try:
            response = await self.pool.post(headers, body, self.timeout)
        except WireTimeout:
            return _Answer(self.name, "retry", started_at, t0, time.perf_counter(), error="timeout")
        except WireError as exc:
            return _Answer(self.name, "retry", started_at, t0, time.perf_counter(), error=str(exc))
        t1 = time.perf_counter()
        kind = classify_status(response.status)
        if kind == "delivered":
            return _Answer(self.name, kind, started_at, t0, t1, response.status)
        text = response.body.decode("utf-8", "replace")
        for secret in redact:
            # Shorter ones would blank out ordinary words and numbers as well.
            if len(secret) >= REDACT_MIN:
                text = text.replace(secret, REDACTED)
        retry_after = None
        if kind == "retry":
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        error = f"HTTP {response.status}: {text}" if text.strip() else f"HTTP {response.status}"
        return _Answer(self.name, kind, started_at, t0, t1, response.status, error, retry_after)

    def _record(self, answer: _Answer) -> None:
        before = self.breaker.state
        if answer.kind == "retry":
            # Only the status or the wire error: the body may quote the request.
            brief = f"HTTP {answer.status}" if answer.status else answer.error
            self.breaker.record(0, 1, brief)
        else:
            # A permanent refusal still shows the provider is up.
            self.breaker.record(1, 0)
        state = self.breaker.state
        if state == before:
            return
        if state == "open":
            log.warning(
                "%s: circuit open after %d failures in a row (last: %s); failing over, "
                "probing again in %.1f s",
                self.where,
                self.breaker.failures,
                self.breaker.last_error,
                self.breaker.ready_in(),
            )
        elif state == "closed":
            log.info("%s: circuit closed, sending to it again", self.where)

    async def close(self) -> None:
        await self.pool.close()


class _Channel:
    def __init__(self, name: str, channel: Channel, templates: Mapping[str, TypeTemplates]) -> None:
        self.name = name
        self.kind = channel.kind
        self.templates = templates
        self.providers = [_Provider(name, channel, p) for p in channel.providers]

    def candidates(self, off: frozenset[str] = frozenset()) -> list[_Provider]:
        """The providers to offer a message to, in order, leaving out those switched
        `off`: those whose breaker lets it through, else (all open) the one that reopens
        soonest: a message is never dropped for a breaker. Empty only if all are off."""
        on = [p for p in self.providers if p.name not in off]
        if not on:
            return []
        usable = [p for p in on if p.usable()]
        return usable or [min(on, key=lambda p: p.breaker.ready_in())]

    async def offer(
        self, message_id: str, body: bytes, redact: Sequence[str], off: frozenset[str]
    ) -> list[_Answer]:
        """Offer one message to the providers until one takes it or refuses it for good;
        every answer, in order (never empty while any provider is on)."""
        answers: list[_Answer] = []
        candidates = self.candidates(off)
        for n, provider in enumerate(candidates):
            # The last one goes even if its breaker opened meanwhile, unless another
            # provider already answered: every attempt reaches some provider.
            force = n == len(candidates) - 1 and not answers
            answer = await provider.post(message_id, body, redact, force=force)
            if answer is None:
                continue
            answers.append(answer)
            if answer.kind != "retry":
                # Taken, or refused for good: a fallback must neither send the message a
                # second time nor be sent a request that is itself wrong.
                break
        return answers

    async def send(self, delivery: Delivery) -> Outcome:
        off = _switched_off(delivery.payload)
        if off and not self.candidates(off):
            return Outcome(
                delivery.outbox_id,
                "retry",
                datetime.now(UTC),
                0.0,
                error=f"every provider of channel {self.name} is switched off",
            )
        try:
            if self.kind == "sms":
                return await self._sms(delivery, off)
            return await self._push(delivery, off)
        except (RenderError, Undeliverable) as exc:
            return undeliverable(delivery, str(exc))
        except Exception as exc:
            # A bug must cost this row a retry, not the whole batch (whose other rows may
            # have been sent already).
            log.exception("channel %s: outbox row %d failed", self.name, delivery.outbox_id)
            return Outcome(
                delivery.outbox_id,
                "retry",
                datetime.now(UTC),
                0.0,
                error=trim_error(f"transport error: {type(exc).__name__}: {exc}"),
            )

    def _render(self, delivery: Delivery) -> dict[str, Any]:
        payload = delivery.payload
        type_name = payload.get("type")
        templates = self.templates.get(str(type_name))
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
        return templates.render(self.kind, payload.get("locale"), context)

    async def _sms(self, delivery: Delivery, off: frozenset[str]) -> Outcome:
        rendered = self._render(delivery)
        payload = delivery.payload
        phone = payload.get("phone")
        body = _checked(
            SmsMessage,
            {
                "message_id": delivery.event_id,
                "to": phone,
                "text": rendered.get("text"),
                "notification_id": payload.get("notification_id"),
                "type": payload.get("type"),
                "transactional": payload.get("transactional"),
            },
        )
        text = str(rendered.get("text"))
        redact = [str(phone), str(phone).lstrip("+"), text]
        answers = await self.offer(delivery.event_id, body, redact, off)
        return _outcome(delivery, answers, answers)

    async def _push(self, delivery: Delivery, off: frozenset[str]) -> Outcome:
        payload = delivery.payload
        devices = payload.get("devices") or []
        if not isinstance(devices, list) or not devices:
            raise Undeliverable("no push device")
        rendered = self._render(delivery)
        # The claim lists devices oldest first; the newest are the likeliest in use.
        chosen = devices[::-1][:PUSH_DEVICES_MAX]
        # Every body is built before anything is sent: a row that cannot become valid
        # requests fails as a whole, not after some of its devices got the push.
        messages = []
        for device in chosen:
            token = str(device.get("token")) if isinstance(device, dict) else ""
            message_id = f"{delivery.event_id}.{_token_hash(token)}"
            body = _checked(
                PushMessage,
                {
                    "message_id": message_id,
                    "token": token,
                    "platform": device.get("platform") if isinstance(device, dict) else None,
                    "title": rendered.get("title"),
                    "body": rendered.get("body"),
                    "data": rendered.get("data", {}),
                    "notification_id": payload.get("notification_id"),
                    "type": payload.get("type"),
                    "transactional": payload.get("transactional"),
                },
            )
            messages.append((token, message_id, body))
        texts = [str(rendered.get("title")), str(rendered.get("body"))]
        results = await asyncio.gather(
            *(
                self.offer(message_id, body, [token, *texts], off)
                for token, message_id, body in messages
            )
        )
        # Each device's fate is its last answer: taken, refused, or failed everywhere.
        accepted = [answers[-1] for answers in results if answers[-1].kind == "delivered"]
        invalid = tuple(
            token
            for (token, _, _), answers in zip(messages, results, strict=True)
            if answers[-1].kind == "failed" and answers[-1].status in INVALID_TOKEN_STATUSES
        )
        every = [a for answers in results for a in answers]
        if accepted:
            # The user has the notification; devices that failed are not retried for it.
            return _outcome(delivery, every, accepted[:1], invalid)
        transient = [answers for answers in results if answers[-1].kind == "retry"]
        if transient:
            return _outcome(delivery, every, _numbered(results, transient), invalid)
        if len(invalid) == len(results):
            return _outcome(
                delivery, every, every[-1:], invalid, kind="failed", error="no valid device"
            )
        refused = [answers for answers in results if answers[-1].kind == "failed"]
        return _outcome(delivery, every, _numbered(results, refused), invalid)


def _switched_off(payload: Mapping[str, Any]) -> frozenset[str]:
    """The providers an operator switched off, as the claim listed them."""
    names = payload.get("providers_off")
    return frozenset(str(n) for n in names) if isinstance(names, list) else frozenset()


def _checked(message: type[msgspec.Struct], fields: dict[str, Any]) -> bytes:
    """The request body, valid by the documented schema (the pattern of `to`, lengths)."""
    try:
        return _encode(msgspec.convert(fields, message))
    except msgspec.ValidationError as exc:
        # msgspec names the field and the rule, never the value.
        raise Undeliverable(f"not a valid {message.__name__}: {exc}") from None


def _token_hash(token: str) -> str:
    # Distinct per device and stable across retries, without putting the token in an id.
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _numbered(results: Sequence[list[_Answer]], chosen: Sequence[list[_Answer]]) -> list[_Answer]:
    """The answers of the chosen devices, labelled with the device's rank (never its token)."""
    numbered: list[_Answer] = []
    for n, answers in enumerate(results, 1):
        if any(answers is c for c in chosen):
            numbered += [replace(a, device=f"device {n}, ") for a in answers]
    return numbered


def _outcome(
    delivery: Delivery,
    every: Sequence[_Answer],
    decisive: Sequence[_Answer],
    invalid: tuple[str, ...] = (),
    *,
    kind: OutcomeKind | None = None,
    error: str | None = None,
) -> Outcome:
    """One attempt's outcome. `every` answer counts for its timing; the `decisive` ones
    (non-empty) for the rest: the last of them names the provider and the status."""
    last = decisive[-1]
    kind = kind or last.kind
    if kind != "delivered" and error is None:
        error = "; ".join(f"{a.device}{a.provider}: {a.error}" for a in decisive)
    retry_after = None
    if kind == "retry":
        waits = [a.retry_after for a in decisive if a.kind == "retry"]
        # A floor only if every provider asked for one: any other may be tried at once.
        if waits and all(w is not None for w in waits):
            retry_after = min(w for w in waits if w is not None)
    return Outcome(
        delivery.outbox_id,
        kind,
        min(a.started_at for a in every),
        (max(a.t1 for a in every) - min(a.t0 for a in every)) * 1000.0,
        status_code=last.status,
        error=trim_error(error) if error else None,
        retry_after=retry_after,
        provider=last.provider,
        invalid_tokens=invalid,
    )


class ProviderTransport(Transport):
    """Delivers for every channel whose transport is "provider" (kinds sms and push)."""

    def __init__(
        self, channels: Mapping[str, Channel], templates: Mapping[str, TypeTemplates]
    ) -> None:
        self._channels = {
            name: _Channel(name, channel, templates)
            for name, channel in channels.items()
            if channel.transport == "provider"
        }

    async def deliver(self, consumer: str, batch: Sequence[Delivery]) -> list[Outcome]:
        channel = self._channels[consumer]
        return list(await asyncio.gather(*(channel.send(d) for d in batch)))

    async def after_batch(
        self, consumer: str, batch: Sequence[Delivery], outcomes: Sequence[Outcome], pool: Pool
    ) -> None:
        """Forget the push devices a provider called invalid."""
        await outbox.forget_gone_contacts(
            pool, consumer, batch, outcomes, outbox.remove_push_devices, "push devices"
        )

    async def close(self) -> None:
        for channel in self._channels.values():
            for provider in channel.providers:
                await provider.close()
