"""The provider transport against real provider apps on loopback: failover from the primary
to the fallback, per-provider breakers and timeouts, push per device, signatures."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from dispatcher.provider_transport import PUSH_DEVICES_MAX, ProviderTransport
from dispatcher.transport_base import Delivery, Outcome
from service.config.notify import Channel
from service.notify.templates import load_templates
from tests.providers import Providers, serving_providers
from tests.support import PROVIDER_SECRET, make_config, notify_data

PHONE = "+4915112345678"
RECEIPT = {"amount": "9.99", "currency": "EUR", "order_id": "o-1", "paid_at": "today"}
RECEIPT_SMS = "Payment of 9.99 EUR received, order o-1."
EPISODE = {"series": "Dark", "episode": 3, "title": "Past and Present", "url": "https://x/e3"}
OTHER_SECRET = "whsec_b3RoZXItcHJvdmlkZXItc2VjcmV0LTAxMjM0NTY3ODk="


@pytest.fixture
async def providers() -> AsyncIterator[tuple[Providers, str]]:
    async with serving_providers() as running:
        yield running


@asynccontextmanager
async def transport(
    base: str, settings: dict[str, dict[str, Any]] | None = None
) -> AsyncIterator[ProviderTransport]:
    """The transport of the test config's sms and push channels; `settings` are added to
    the provider of that name (e.g. its timeout or breaker)."""
    data = notify_data(providers_url=base)
    for channel in data["channels"].values():
        for provider in channel.get("providers", []):
            provider.update((settings or {}).get(provider["name"], {}))
    config = make_config("postgresql://127.0.0.1:9/unused", **data)
    channels: dict[str, Channel] = {
        n: c for n, c in config.channels.items() if c.transport == "provider"
    }
    sender = ProviderTransport(channels, load_templates(config))
    try:
        yield sender
    finally:
        await sender.close()


def payload(n: int, type_: str, data: dict[str, Any], **contact: Any) -> dict[str, Any]:
    return {
        "notification_id": n,
        "event_id": str(uuid.uuid4()),
        "type": type_,
        "category": "billing" if type_ == "payment_receipt" else "content",
        "transactional": type_ == "payment_receipt",
        "user_id": "anna",
        "locale": "en",
        "data": data,
        "escalation": False,
        "email": None,
        "phone": None,
        "devices": None,
    } | contact


def sms(n: int, *, data: dict[str, Any] = RECEIPT, phone: str = PHONE) -> Delivery:
    body = payload(n, "payment_receipt", data, phone=phone, escalation=True)
    return Delivery(n, str(uuid.uuid4()), "sms", "client:anna", body, 1, datetime.now(UTC))


def push(n: int, tokens: list[str]) -> Delivery:
    devices = [{"token": t, "platform": "android"} for t in tokens]
    body = payload(n, "new_episode", EPISODE, devices=devices)
    return Delivery(n, str(uuid.uuid4()), "push", "client:anna", body, 1, datetime.now(UTC))


async def one(sender: ProviderTransport, channel: str, delivery: Delivery) -> Outcome:
    [outcome] = await sender.deliver(channel, [delivery])
    assert outcome.outbox_id == delivery.outbox_id
    return outcome


async def test_a_healthy_primary_takes_the_sms_signed_with_its_own_secret(
    providers: tuple[Providers, str],
) -> None:
    peers, base = providers
    peers.secrets["sms-fallback"] = OTHER_SECRET
    async with transport(base, {"sms-fallback": {"secret": OTHER_SECRET}}) as sender:
        delivery = sms(1)
        outcome = await one(sender, "sms", delivery)
        assert (outcome.kind, outcome.provider, outcome.status_code) == (
            "delivered",
            "sms-primary",
            200,
        )
        assert peers.to("sms-fallback") == []
        [sent] = peers.sent
        assert sent.verified
        assert abs(sent.timestamp - time.time()) < 5
        assert sent.webhook_id == delivery.event_id
        assert sent.body == {
            "message_id": delivery.event_id,
            "to": PHONE,
            "text": RECEIPT_SMS,
            "notification_id": 1,
            "type": "payment_receipt",
            "transactional": True,
        }

        # Failed over, the fallback's request verifies with the fallback's secret, not
        # with the primary's.
        peers.status["sms-primary"] = 503
        outcome = await one(sender, "sms", delivery)
        assert (outcome.kind, outcome.provider) == ("delivered", "sms-fallback")
    fallback = peers.to("sms-fallback")[0]
    assert fallback.verified
    Webhook(OTHER_SECRET).verify(fallback.raw, fallback.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(PROVIDER_SECRET).verify(fallback.raw, fallback.headers)


async def test_a_primary_answering_503_hands_the_sms_to_the_fallback_exactly_once(
    providers: tuple[Providers, str],
) -> None:
    peers, base = providers
    peers.status["sms-primary"] = 503
    async with transport(base) as sender:
        delivery = sms(1)
        outcome = await one(sender, "sms", delivery)
    assert (outcome.kind, outcome.provider, outcome.status_code) == (
        "delivered",
        "sms-fallback",
        200,
    )
    assert [s.provider for s in peers.sent] == ["sms-primary", "sms-fallback"]
    primary, fallback = peers.sent
    # The same message id at both, so a provider that saw it already can drop a repeat.
    assert primary.webhook_id == fallback.webhook_id == delivery.event_id
    assert primary.body == fallback.body
    assert all(s.verified for s in peers.sent)


async def test_a_primary_that_times_out_is_failed_over_after_its_own_timeout(
    providers: tuple[Providers, str],
) -> None:
    peers, base = providers
    peers.hanging.add("sms-primary")
    # The channel's timeout is 2 s; the primary's own is shorter.
    async with transport(base, {"sms-primary": {"timeout": 0.3}}) as sender:
        t0 = time.monotonic()
        outcome = await one(sender, "sms", sms(1))
        took = time.monotonic() - t0
    assert (outcome.kind, outcome.provider) == ("delivered", "sms-fallback")
    assert 0.3 <= took < 1.5
    assert [s.provider for s in peers.sent] == ["sms-primary", "sms-fallback"]


async def test_an_open_breaker_sends_straight_to_the_fallback_until_its_cooldown_passes(
    providers: tuple[Providers, str], caplog: pytest.LogCaptureFixture
) -> None:
    peers, base = providers
    peers.status["sms-primary"] = 503
    breaker = {"failures": 2, "cooldown": 1.0, "max_cooldown": 1.0}
    caplog.set_level(logging.INFO, logger="dispatcher.provider_transport")
    async with transport(base, {"sms-primary": {"breaker": breaker}}) as sender:
        for n in (1, 2):
            outcome = await one(sender, "sms", sms(n))
            assert outcome.provider == "sms-fallback"
        assert len(peers.to("sms-primary")) == 2
        opened = time.monotonic()

        # Open: the primary is not even asked.
        outcomes = await sender.deliver("sms", [sms(n) for n in range(3, 8)])
        assert time.monotonic() - opened < 1.0, "too slow to observe the open breaker"
        assert {(o.kind, o.provider) for o in outcomes} == {("delivered", "sms-fallback")}
        assert len(peers.to("sms-primary")) == 2
        assert len(peers.to("sms-fallback")) == 7

        # After the cooldown one probe goes to the recovered primary, which closes it.
        peers.status["sms-primary"] = 200
        await asyncio.sleep(1.0 - (time.monotonic() - opened) + 0.05)
        outcome = await one(sender, "sms", sms(8))
        assert (outcome.kind, outcome.provider) == ("delivered", "sms-primary")
        outcomes = await sender.deliver("sms", [sms(n) for n in range(9, 12)])
        assert {o.provider for o in outcomes} == {"sms-primary"}
    assert len(peers.to("sms-fallback")) == 7
    assert "sms-primary: circuit open" in caplog.text
    assert "sms-primary: circuit closed" in caplog.text
    # Logs never carry the recipient or the message.
    assert PHONE not in caplog.text and PHONE[1:] not in caplog.text
    assert RECEIPT_SMS not in caplog.text


async def test_with_every_breaker_open_the_soonest_to_reopen_still_gets_the_message(
    providers: tuple[Providers, str],
) -> None:
    peers, base = providers
    peers.status |= {"sms-primary": 503, "sms-fallback": 503}
    breaker = {"failures": 1, "cooldown": 30}
    settings = {"sms-primary": {"breaker": breaker}, "sms-fallback": {"breaker": breaker}}
    async with transport(base, settings) as sender:
        first = await one(sender, "sms", sms(1))  # opens both, the primary first
        second = await one(sender, "sms", sms(2))
    assert (first.kind, first.provider) == ("retry", "sms-fallback")
    # Not dropped, and not sent to every dead provider either: one try, at the primary.
    assert (second.kind, second.provider) == ("retry", "sms-primary")
    assert [s.provider for s in peers.sent] == ["sms-primary", "sms-fallback", "sms-primary"]


async def test_when_every_provider_fails_the_attempt_is_retried(
    providers: tuple[Providers, str],
) -> None:
    peers, base = providers
    peers.status |= {"sms-primary": 503, "sms-fallback": 429}
    async with transport(base) as sender:
        outcome = await one(sender, "sms", sms(1))
        assert (outcome.kind, outcome.provider, outcome.status_code) == (
            "retry",
            "sms-fallback",
            429,
        )
        assert outcome.error is not None
        assert outcome.error.startswith("sms-primary: HTTP 503: rejected: ")
        assert "; sms-fallback: HTTP 429: rejected: " in outcome.error
        # The providers quoted the request: the attempt log keeps neither number nor text.
        assert PHONE[1:] not in outcome.error and RECEIPT_SMS not in outcome.error
        # Only one provider asked for a pause: the other may be tried again at once.
        assert outcome.retry_after is None

        peers.headers |= {"sms-primary": {"Retry-After": "7"}, "sms-fallback": {"Retry-After": "3"}}
        outcome = await one(sender, "sms", sms(2))
        assert (outcome.kind, outcome.retry_after) == ("retry", 3.0)

    # A connection refused everywhere is transient too.
    async with transport("http://127.0.0.1:9") as sender:
        outcome = await one(sender, "sms", sms(3))
    assert (outcome.kind, outcome.provider, outcome.status_code) == ("retry", "sms-fallback", None)
    assert len(peers.sent) == 4


async def test_a_400_fails_without_trying_the_fallback(
    providers: tuple[Providers, str],
) -> None:
    peers, base = providers
    peers.status["sms-primary"] = 400
    async with transport(base) as sender:
        outcome = await one(sender, "sms", sms(1))
    assert (outcome.kind, outcome.provider, outcome.status_code) == ("failed", "sms-primary", 400)
    assert outcome.error is not None and outcome.error.startswith("sms-primary: HTTP 400")
    assert "[redacted]" in outcome.error and PHONE[1:] not in outcome.error
    assert [s.provider for s in peers.sent] == ["sms-primary"]


async def test_push_goes_to_each_device_and_reports_the_tokens_answered_410(
    providers: tuple[Providers, str],
) -> None:
    peers, base = providers
    peers.by_token["tok-old"] = 410
    async with transport(base) as sender:
        delivery = push(1, ["tok-old", "tok-new"])
        outcome = await one(sender, "push", delivery)
        assert (outcome.kind, outcome.provider) == ("delivered", "push-primary")
        assert outcome.invalid_tokens == ("tok-old",)
        first_ids = {s.body["token"]: s.webhook_id for s in peers.sent}
        # A retry of the row sends each device the same message id again.
        await one(sender, "push", delivery)
    assert sorted(first_ids) == ["tok-new", "tok-old"]
    assert len(set(first_ids.values())) == 2
    assert all(i.startswith(f"{delivery.event_id}.") for i in first_ids.values())
    assert {s.body["token"]: s.webhook_id for s in peers.sent[2:]} == first_ids
    assert all("tok-" not in i for i in first_ids.values())
    new = next(s for s in peers.sent if s.body["token"] == "tok-new")
    assert new.verified
    assert new.body == {
        "message_id": first_ids["tok-new"],
        "token": "tok-new",
        "platform": "android",
        "title": "Dark: new episode",
        "body": 'Episode 3, "Past and Present", is out now',
        "data": {"url": "https://x/e3", "series": "Dark"},
        "notification_id": 1,
        "type": "new_episode",
        "transactional": False,
    }
    assert peers.to("push-fallback") == []


async def test_push_goes_to_the_newest_devices_only(providers: tuple[Providers, str]) -> None:
    peers, base = providers
    tokens = [f"tok-{n}" for n in range(PUSH_DEVICES_MAX + 2)]  # oldest first
    async with transport(base) as sender:
        outcome = await one(sender, "push", push(1, tokens))
    assert outcome.kind == "delivered"
    assert sorted(s.body["token"] for s in peers.sent) == tokens[2:]


async def test_push_fails_over_per_device_and_fails_when_no_device_is_valid(
    providers: tuple[Providers, str],
) -> None:
    peers, base = providers
    peers.status["push-primary"] = 500
    peers.by_token |= {"tok-a": 404, "tok-b": 410}
    async with transport(base) as sender:
        # Two dead tokens: the primary's 500s fail over, and the fallback's 404 and 410
        # end the attempt for good.
        outcome = await one(sender, "push", push(1, ["tok-a", "tok-b"]))
    assert (outcome.kind, outcome.error) == ("failed", "no valid device")
    assert sorted(outcome.invalid_tokens) == ["tok-a", "tok-b"]
    assert outcome.provider == "push-fallback"
    assert len(peers.to("push-primary")) == 2
    assert len(peers.to("push-fallback")) == 2


async def test_a_row_that_cannot_become_a_valid_request_fails_unsent(
    providers: tuple[Providers, str],
) -> None:
    peers, base = providers
    async with transport(base) as sender:
        missing = await one(sender, "sms", sms(1, data={"currency": "EUR", "order_id": "o-1"}))
        not_e164 = await one(sender, "sms", sms(2, phone="0151 12345678"))
        no_device = await one(sender, "push", push(3, []))
    assert missing.kind == "failed"
    assert missing.error is not None and "'amount' is undefined" in missing.error
    assert not_e164.kind == "failed"
    assert not_e164.error is not None and "$.to" in not_e164.error
    assert "0151" not in not_e164.error
    assert no_device.kind == "failed"
    assert peers.sent == []
