"""One consumer's claim loop: claim a batch, deliver it, complete it, forever.

A loop claims a batch (one round trip), hands it to the consumer's transport, and
completes it (one round trip), going again at once until a claim comes back empty. Without
a wake-up (dispatcher/worker.py passes them on) it still claims every `sweep_interval`,
and at the due time of any retry it scheduled itself (dispatcher/retry_timers.py), so a
lost wake-up costs a delay, never a row. Its circuit breaker (dispatcher/consumer_state.py)
holds claims back while the consumer keeps failing; the transport's `after_batch` does any
follow-up work on a batch before it is completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import psycopg
from psycopg_pool import PoolTimeout

from dispatcher import dispatcher_metrics as metrics
from dispatcher import outbox
from dispatcher.breaker import CircuitBreaker
from dispatcher.consumer_state import ConsumerState
from dispatcher.provider_transport import PUSH_DEVICES_MAX
from dispatcher.rate_limit import TokenBucket
from dispatcher.retry import retry_delay, trim_error
from dispatcher.retry_timers import RetryTimers
from dispatcher.transport_base import Delivery, Outcome, Pool, Transport, log_attempts
from dispatcher.webpush_transport import SUBSCRIPTIONS_MAX
from service.config.core import DispatcherSettings, KafkaSettings
from service.config.notify import Channel
from service.config.seen import Consumer

log = logging.getLogger(__name__)

# After a database error the loop waits this long before trying again: short, so that a
# consumer delivers again within about this long of the database coming back.
DB_RETRY_S = 0.5
# Completions of an unordered consumer written in the background while it goes on.
MAX_PENDING_COMPLETIONS = 2
# After a claim that found rows, empty claims are retried every HOT_POLL_S for up to
# HOT_WINDOW_S (see ConsumerLoop._delay).
HOT_WINDOW_S = 1.0
HOT_POLL_S = 0.02
# A failed completion is retried on a fresh connection for up to this share of the lease:
# written late it still counts (complete_outbox checks the claim, not the clock), and every
# completion lost is a batch delivered twice.
COMPLETE_LEASE_SHARE = 0.5


def lease_for(
    consumer: Consumer | Channel, settings: DispatcherSettings, kafka: KafkaSettings | None = None
) -> float:
    """The claim's lease: the configured one, raised to outlast a batch's worst case.

    A batch takes at most ceil(batch_size / concurrency) rounds of `timeout` each (every
    request is bounded by the timeout); one more timeout of margin covers the claim and
    the completion. A live dispatcher thus always completes before its lease ends, and
    its rows are never claimed twice while it lives.
    """
    if consumer.transport == "kafka" and kafka is not None:
        # A Kafka batch is one bounded call (kafka.request_timeout), not rounds of requests.
        worst = 2 * max(kafka.request_timeout, consumer.timeout).total_seconds()
        return max(settings.lease.total_seconds(), worst)
    rounds = math.ceil(consumer.batch_size / consumer.concurrency)
    # A provider channel may try each of its providers (failover) within one attempt, and
    # push sends to each of a user's devices, Web Push to each of their browsers.
    tries, timeout = 1, consumer.timeout
    if isinstance(consumer, Channel) and consumer.transport == "webpush":
        tries = SUBSCRIPTIONS_MAX
    if isinstance(consumer, Channel) and consumer.providers:
        tries = len(consumer.providers) * (PUSH_DEVICES_MAX if consumer.kind == "push" else 1)
        timeout = max(p.timeout or consumer.timeout for p in consumer.providers)
    worst = (rounds + 1) * tries * timeout.total_seconds()
    return max(settings.lease.total_seconds(), worst)


class ConsumerLoop:
    """Claims, delivers and completes one consumer's rows, forever."""

    def __init__(
        self,
        name: str,
        consumer: Consumer | Channel,
        transport: Transport,
        pool: Pool,
        settings: DispatcherSettings,
        *,
        dispatcher: str,
        buckets: Callable[[], Sequence[Sequence[int]]],
        kafka: KafkaSettings | None = None,
        channel: outbox.ChannelClaim | None = None,
    ) -> None:
        """`buckets`: the buckets this dispatcher holds of the consumer now, in the groups
        one claim may name together (dispatcher/bucket_leases.py: one shard's on a Citus
        cluster, one group on one server); the loop claims only those, a group a claim."""
        self.name = name
        self.consumer = consumer
        self.channel = channel
        self.transport = transport
        self.pool = pool
        self.settings = settings
        self.dispatcher = dispatcher
        self.buckets = buckets
        # The group the next claim starts with: each gets its turn.
        self._next_group = 0
        self.lease_s = lease_for(consumer, settings, kafka)
        self.state = ConsumerState(name, consumer.breaker, pool, dispatcher=dispatcher)
        self.limiter = TokenBucket(consumer.rate_limit) if consumer.rate_limit else None
        self.delivered = 0
        self._event = asyncio.Event()
        self._stopping = False
        self._retries = RetryTimers()
        self._completing: set[asyncio.Task[None]] = set()
        self._db_failing = False
        self._last_rows_at = -HOT_WINDOW_S

    @property
    def breaker(self) -> CircuitBreaker:
        return self.state.breaker

    def wake(self) -> None:
        self._event.set()

    def stop(self) -> None:
        self._stopping = True
        self._event.set()

    async def flush(self) -> None:
        """Wait for state updates still being written."""
        await self.state.flush()

    async def run(self) -> None:
        await self.state.publish()
        busy = True  # claim at once on start: rows may have waited for us
        while not self._stopping:
            delay = self._delay(busy)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event.wait(), delay)
                if self._stopping:
                    break
                if self.state.paused() > 0:
                    busy = False  # woken while paused: wait out the rest of the pause
                    continue
            self._event.clear()
            try:
                busy = await self._batch()
            except (PoolTimeout, psycopg.Error) as exc:
                log.warning("consumer %s: database error, retrying: %s", self.name, exc)
                # Claim again right after the pause, not at the next sweep: the wake-ups
                # sent while the database was away are lost with it.
                busy = True
                self._db_failing = True
                await asyncio.sleep(DB_RETRY_S)
        # A stopped loop has written everything it delivered.
        if self._completing:
            await asyncio.gather(*self._completing, return_exceptions=True)

    def _delay(self, busy: bool) -> float:
        """Seconds to wait before the next claim (0: claim now)."""
        paused = self.state.paused()
        if paused > 0:
            # Wake-ups while paused are moot: the first claim after the pause takes every
            # due row anyway.
            self._event.clear()
            return paused
        if busy or self._event.is_set():
            return 0.0
        now = time.monotonic()
        if now - self._last_rows_at < HOT_WINDOW_S:
            # Under load a claim found rows moments ago, so more are surely on their way:
            # look again shortly rather than trust every wake-up to arrive. Procrastinate's
            # worker can lose one (it clears its notification flag after a fetch that found
            # nothing, dropping a NOTIFY that came during that fetch) and the queueing lock
            # then swallows the wake-ups behind it until its next poll. Idle consumers are
            # not polled: they wait for a wake-up or the sweep.
            return HOT_POLL_S
        return self._retries.wait(now, self.settings.sweep_interval.total_seconds())

    async def _batch(self) -> bool:
        """Claim, deliver and complete one batch; True if it found rows."""
        groups = self.buckets()
        if not groups:
            # None leased yet: the lease keeper wakes the loop when it has some, and the
            # sweep finds the retries whose timers fire meanwhile.
            self._retries.drop_due(time.monotonic())
            return False
        # First the group of a retry that just fell due, else the one after the group of the
        # last batch; if that claim comes back empty, the groups that hold due rows, found
        # by one read (on Citus one group per shard: an idle consumer would otherwise send a
        # claim to every shard in turn).
        fired = self._retries.drop_due(time.monotonic())
        start = self._next_group % len(groups)
        for buckets in fired:
            if tuple(buckets) in groups:
                start = groups.index(tuple(buckets))
                break
        order = [(start + n) % len(groups) for n in range(len(groups))]
        batch = await self._claim(groups[start])
        index = start
        if not batch and len(groups) > 1:
            due = await outbox.due_buckets(self.pool, self.name, [b for g in groups for b in g])
            for index in order[1:]:
                if due.intersection(groups[index]):
                    batch = await self._claim(groups[index])
                    if batch:
                        break
        if not batch:
            return False
        group = groups[index]
        self._next_group = index + 1
        self._last_rows_at = time.monotonic()
        outcomes = await self._deliver(batch)
        log_attempts(self.name, batch, outcomes)
        await self.transport.after_batch(self.name, batch, outcomes, self.pool)
        completions = self._decide(batch, outcomes)
        self.state.record(outcomes)
        metrics.observe_attempts(self.name, outcomes)
        if self.consumer.ordered:
            # A subject's next row becomes claimable only once this one is completed.
            await self._complete(completions, group)
        else:
            # The completion is written while the next batch is claimed and sent: rows
            # that arrived meanwhile do not also wait for this round trip. Safe, because
            # this batch's rows stay leased until it lands; bounded, so a slow database
            # slows the loop rather than piling up writes.
            while len(self._completing) >= MAX_PENDING_COMPLETIONS:
                await asyncio.wait(self._completing, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(self._complete(completions, group))
            self._completing.add(task)
            task.add_done_callback(self._completing.discard)
        # Go again until a claim comes back empty: rows may have arrived meanwhile, and for
        # an ordered consumer every completed row makes its successor the new head.
        return True

    async def _claim(self, buckets: Sequence[int]) -> list[Delivery]:
        limit = self.state.claim_limit(self.consumer.batch_size, self.consumer.concurrency)
        if self.limiter is not None:
            limit = await self.limiter.take(limit)
        claimed = 0
        try:
            batch = await outbox.claim(
                self.pool,
                self.name,
                limit=limit,
                lease_s=self.lease_s,
                dispatcher=self.dispatcher,
                buckets=buckets,
                ordered=self.consumer.ordered,
                channel=self.channel,
                # After a database error, short waits for a connection: the pool starts a
                # fresh connect only for a new request once its previous attempt gave up
                # (service/database.py, RECONNECT_TIMEOUT_S), so a request waiting out the
                # full acquire timeout would delay the recovery by as much.
                acquire_s=DB_RETRY_S if self._db_failing else None,
            )
            self._db_failing = False
            claimed = len(batch)
        finally:
            if self.limiter is not None:
                self.limiter.refund(limit - claimed)
        return batch

    async def _deliver(self, batch: Sequence[Delivery]) -> list[Outcome]:
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        try:
            outcomes = await self.transport.deliver(self.name, batch)
        except Exception as exc:
            # A transport bug must not kill the loop or lose the rows: retry them all.
            log.exception("consumer %s: transport failed on a batch of %d", self.name, len(batch))
            error = trim_error(f"transport error: {type(exc).__name__}: {exc}")
            outcomes = []
        else:
            error = "transport returned no outcome for this row"
        by_id = {o.outbox_id: o for o in outcomes}
        took = (time.perf_counter() - t0) * 1000.0
        return [
            by_id.get(d.outbox_id) or Outcome(d.outbox_id, "retry", started_at, took, error=error)
            for d in batch
        ]

    def _decide(
        self, batch: Sequence[Delivery], outcomes: Sequence[Outcome]
    ) -> list[outbox.Completion]:
        by_id = {d.outbox_id: d for d in batch}
        inbox = isinstance(self.consumer, Channel) and self.consumer.kind == "inbox"
        completions = []
        for outcome in outcomes:
            delivery = by_id[outcome.outbox_id]
            attempt = delivery.attempt
            delay = None
            if outcome.kind == "retry":
                delay = retry_delay(self.consumer.backoff, attempt, outcome.retry_after)
            item = None
            if inbox and delivery.payload.get("user_id") is not None:
                item = (str(delivery.payload["user_id"]), str(delivery.payload["notification_id"]))
            completions.append(outbox.Completion(outcome, attempt, delay, item))
        return completions

    async def _complete(
        self, completions: Sequence[outbox.Completion], buckets: Sequence[int]
    ) -> None:
        give_up_at = time.monotonic() + self.lease_s * COMPLETE_LEASE_SHARE
        n = 0
        while True:
            n += 1
            try:
                recorded = await outbox.complete(
                    self.pool,
                    self.name,
                    self.consumer,
                    completions,
                    dispatcher=self.dispatcher,
                    buckets=buckets,
                )
                break
            except (PoolTimeout, psycopg.OperationalError) as exc:
                # A stopping dispatcher does not wait for the database to come back.
                late = time.monotonic() + DB_RETRY_S > give_up_at
                if late or self._stopping:
                    # The rows stay leased and come back when the lease ends: delivered
                    # ones are delivered again (at least once), none is lost.
                    log.error(
                        "consumer %s: could not complete %d rows (%s); they return after the lease",
                        self.name,
                        len(completions),
                        exc,
                    )
                    return
                # The pool replaces the connection that failed (make_pool's check).
                await asyncio.sleep(min(DB_RETRY_S * n, 2.0))
        # Armed once the completion is written (the retry time counts from then), never
        # before: a timer firing while the rows were still leased would be spent on an
        # empty claim.
        delays = [c.delay_s for c in completions if c.delay_s is not None]
        if self._retries.arm(time.monotonic(), delays, buckets):
            self._event.set()
        lost = sum(1 for r in recorded if not r.applied)
        if lost:
            log.warning(
                "consumer %s: %d rows had been claimed again after our lease ran out",
                self.name,
                lost,
            )
        self.delivered += sum(1 for r in recorded if r.applied and r.outcome == "delivered")
        # Counted as written: a row whose lease ran out is another claim's to count.
        metrics.count_deliveries(self.name, (r.outcome for r in recorded if r.applied))
        dead = [r.outbox_id for r in recorded if r.applied and r.outcome in ("dead", "failed")]
        if dead:
            log.warning(
                "consumer %s: %d dead letters (failed or dead), e.g. outbox id %d",
                self.name,
                len(dead),
                dead[0],
            )
