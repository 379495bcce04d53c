"""Pure dispatcher logic: retry classification and backoff, breaker, rate limit, lease."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.breaker import CircuitBreaker
from dispatcher.loop import lease_for
from dispatcher.provider_transport import PUSH_DEVICES_MAX
from dispatcher.rate_limit import TokenBucket
from dispatcher.retry import (
    backoff_bound,
    classify_status,
    parse_retry_after,
    retry_delay,
    schedule,
    trim_error,
)
from service.config.base import Backoff, Breaker
from service.config.core import DispatcherSettings
from service.config.notify import Channel, Provider
from service.config.seen import Consumer
from service.seen import consumer_openapi as contracts

BACKOFF = Backoff(initial=timedelta(seconds=1), factor=2.0, cap=timedelta(seconds=30))


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (299, "delivered"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
        (599, "retry"),
        (301, "failed"),
        (400, "failed"),
        (401, "failed"),
        (404, "failed"),
        (409, "failed"),
        (422, "failed"),
    ],
)
def test_classify_status(status: int, kind: str) -> None:
    assert classify_status(status) == kind


def test_backoff_bound_grows_exponentially_up_to_the_cap() -> None:
    assert [backoff_bound(BACKOFF, n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_bound(BACKOFF, 10_000) == 30  # no overflow


def test_retry_delay_is_equal_jitter_between_half_the_bound_and_the_bound() -> None:
    rng = random.Random(1)
    for attempt in range(1, 10):
        delays = [retry_delay(BACKOFF, attempt, rng=rng) for _ in range(2000)]
        bound = backoff_bound(BACKOFF, attempt)
        # A floor: never a retry right on the heels of a failure.
        assert all(bound / 2 <= d <= bound for d in delays)
        # Spread over the whole upper half, not clustered (that would be no jitter).
        assert min(delays) < bound * 0.52 and max(delays) > bound * 0.98


def test_the_published_schedule_of_the_default_backoff() -> None:
    # The table in docs/delivery.md: attempt -> shortest and longest wait after it.
    assert schedule(Backoff(), 12) == [
        (1, 0.5, 1),
        (2, 1, 2),
        (3, 2, 4),
        (4, 4, 8),
        (5, 8, 16),
        (6, 16, 32),
        (7, 32, 64),
        (8, 64, 128),
        (9, 128, 256),
        (10, 256, 512),
        (11, 300, 600),
        (12, 300, 600),
    ]


def test_retry_after_is_a_floor_bounded_by_the_cap() -> None:
    rng = random.Random(2)
    assert all(retry_delay(BACKOFF, 1, 7.0, rng) == 7.0 for _ in range(100))
    assert retry_delay(BACKOFF, 1, 3600.0, rng) == 30.0
    assert 0.5 <= retry_delay(BACKOFF, 1, 0.0, rng) <= 1
    # A short Retry-After does not undercut the floor.
    assert all(0.5 <= retry_delay(BACKOFF, 1, 0.1, rng) <= 1 for _ in range(100))


def test_parse_retry_after() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now) == 30
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_trim_error() -> None:
    assert trim_error("a\n  b") == "a b"
    assert len(trim_error("x" * 10_000)) == 500


def state(breaker: CircuitBreaker) -> str:
    return breaker.state


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_a_run_of_failures_and_probes_back() -> None:
    clock = Clock()
    breaker = CircuitBreaker(
        Breaker(failures=3, cooldown=timedelta(seconds=10), max_cooldown=timedelta(seconds=25)),
        clock,
    )
    assert breaker.claim_limit(500, 16) == 500
    assert breaker.record(0, 2, "timeout") is True  # streak started: published
    assert state(breaker) == "closed" and breaker.claim_limit(500, 16) == 16
    assert breaker.record(5, 0) is True and breaker.failures == 0  # a success resets
    breaker.record(0, 2, "timeout")
    breaker.record(0, 1, "timeout")
    assert state(breaker) == "open" and breaker.ready_in() == 10
    clock.now += 9.5
    assert breaker.ready_in() == pytest.approx(0.5)
    clock.now += 0.5
    assert breaker.ready_in() == 0 and state(breaker) == "half_open"
    assert breaker.claim_limit(500, 16) == 1
    # A failed probe doubles the pause, up to max_cooldown.
    breaker.record(0, 1, "timeout")
    assert state(breaker) == "open" and breaker.ready_in() == 20
    clock.now += 20
    breaker.ready_in()
    breaker.record(0, 1, "timeout")
    assert breaker.ready_in() == 25
    clock.now += 25
    breaker.ready_in()
    assert breaker.record(1, 0) is True
    assert state(breaker) == "closed" and breaker.claim_limit(500, 16) == 500
    # The pause starts from cooldown again after recovering.
    for _ in range(3):
        breaker.record(0, 1, "timeout")
    assert breaker.ready_in() == 10


def test_permanent_refusals_do_not_open_the_breaker() -> None:
    breaker = CircuitBreaker(Breaker(failures=2))
    for _ in range(10):
        breaker.record(1, 0)  # a 4xx is reported as a success: the consumer answered
    assert state(breaker) == "closed"


async def test_token_bucket_takes_what_is_there_and_waits_for_one() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, clock)
    assert await bucket.take(25) == 10
    bucket.refund(4)
    assert await bucket.take(25) == 4
    clock.now += 0.35
    assert await bucket.take(25) == 3


def test_lease_covers_a_batch_worst_case() -> None:
    settings = DispatcherSettings(lease=timedelta(seconds=60))
    quick = Consumer(transport="kafka", timeout=timedelta(seconds=5), batch_size=100)
    assert lease_for(quick, settings) == 60  # 7 rounds + 1 = 40 s < 60 s
    slow = Consumer(
        transport="kafka", timeout=timedelta(seconds=10), batch_size=500, concurrency=16
    )
    assert lease_for(slow, settings) == (32 + 1) * 10


def test_a_provider_channels_lease_covers_failover_and_the_slowest_provider() -> None:
    settings = DispatcherSettings(lease=timedelta(seconds=1))
    providers = [
        Provider(name="a", url="http://127.0.0.1:1/a", secret="whsec_eA=="),
        Provider(
            name="b", url="http://127.0.0.1:1/b", secret="whsec_eA==", timeout=timedelta(seconds=9)
        ),
    ]
    sms = Channel(
        kind="sms",
        transport="provider",
        providers=providers,
        timeout=timedelta(seconds=2),
        batch_size=100,
        concurrency=100,
    )
    # 1 round + 1 of margin, each trying both providers, bounded by the slower one's 9 s.
    assert lease_for(sms, settings) == 2 * 2 * 9
    push = Channel(
        kind="push",
        transport="provider",
        providers=providers,
        timeout=timedelta(seconds=2),
        batch_size=100,
        concurrency=100,
    )
    assert lease_for(push, settings) == 2 * 2 * PUSH_DEVICES_MAX * 9


def test_the_committed_consumer_contract_is_current() -> None:
    assert contracts.DOCUMENT.read_text() == contracts.render(), (
        "docs/consumer-api.yaml is stale: run python -m service.seen.consumer_openapi"
    )


def test_the_consumer_contract_covers_every_event_type() -> None:
    document = contracts.consumer_document()
    assert sorted(document["webhooks"]) == ["seen-anonymous", "seen-client", "seen-driver"]
    schemas = document["components"]["schemas"]
    assert set(schemas["ClientSeenEvent"]["required"]) >= {
        "event_id",
        "tag",
        "id",
        "seen_at",
        "user_id",
        "uid",
        "bound_uids",
        "phone_id",
    }
    assert set(schemas["DriverSeenEvent"]["required"]) >= {"db_id", "uuid"}
    assert set(schemas["AnonymousSeenEvent"]["properties"]) == {
        "event_type",
        "event_id",
        "tag",
        "id",
        "seen_at",
    }


def test_a_kafka_lease_outlasts_the_kafka_request_timeout_not_request_rounds() -> None:
    from service.config.core import DispatcherSettings, KafkaSettings
    from service.config.seen import Consumer

    settings = DispatcherSettings(lease=timedelta(seconds=5))
    kafka = KafkaSettings(request_timeout=timedelta(seconds=30))
    consumer = Consumer(transport="kafka", timeout=timedelta(seconds=1), batch_size=5000)
    # One bounded producer call per batch: twice the request timeout, whatever the batch.
    assert lease_for(consumer, settings, kafka) == 60
