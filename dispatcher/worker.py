"""The dispatcher: one claim loop per consumer, woken by Procrastinate jobs and a slow sweep.

The write path defers a `dispatcher.wake` job per consumer (one pending at a time, by its
queueing lock). This process runs a Procrastinate worker on the "dispatch" queue whose
task only sets that consumer's wake-up event. Each consumer's loop then claims a batch
(one round trip), hands it to the consumer's transport, and completes it (one round
trip), going again at once until a claim comes back empty. Without a wake-up a loop still
claims every `sweep_interval`, and at the due time of any retry it scheduled itself, so a
lost job costs a delay, never a row.

Isolation: loops are independent tasks with their own transport pools, concurrency,
circuit breaker and rate limit; a consumer that hangs holds up only its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from dispatcher import dispatcher_metrics as metrics
from dispatcher import outbox
from dispatcher.breaker import CircuitBreaker
from dispatcher.jobs import SCHEDULE_CONCURRENCY, jobs_app, run_jobs_worker
from dispatcher.provider_transport import PUSH_DEVICES_MAX
from dispatcher.rate_limit import TokenBucket
from dispatcher.retry import retry_delay, trim_error
from dispatcher.transport_base import Delivery, Outcome, Transport, log_attempts
from dispatcher.transport_registry import build_transports, destinations
from service.config.core import DatabaseSettings, DispatcherSettings, KafkaSettings
from service.config.load import Config
from service.config.notify import Channel
from service.config.seen import Consumer
from service.database import make_pool
from service.notify.catalog import sync_catalog
from service.notify.fanout import MATERIALIZE_QUEUE
from service.notify.templates import TypeTemplates, load_templates
from service.schedule import backend as scheduler
from service.schedule.periodic import SCHEDULE_QUEUE
from service.wake import WAKE_QUEUE

log = logging.getLogger(__name__)

Pool = AsyncConnectionPool[AsyncConnection[Any]]
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
# On a stop, loops get this long to finish the batch in hand, side tasks and pools this
# long each to close; dispatcher/main.py's deadline covers anything beyond.
STOP_LOOPS_S = 15.0
STOP_SIDE_S = 2.0


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


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
    # push sends to each of a user's devices.
    tries, timeout = 1, consumer.timeout
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
        kafka: KafkaSettings | None = None,
        channel: outbox.ChannelClaim | None = None,
    ) -> None:
        self.name = name
        self.consumer = consumer
        self.channel = channel
        self.transport = transport
        self.pool = pool
        self.settings = settings
        self.dispatcher = dispatcher
        self.lease_s = lease_for(consumer, settings, kafka)
        self.breaker = CircuitBreaker(consumer.breaker)
        self.limiter = TokenBucket(consumer.rate_limit) if consumer.rate_limit else None
        self.delivered = 0
        self._event = asyncio.Event()
        self._stopping = False
        # Due times (monotonic) of retries this loop scheduled: it wakes itself for them.
        self._retries: list[float] = []
        self._publishing: set[asyncio.Task[None]] = set()
        self._completing: set[asyncio.Task[None]] = set()
        self._db_failing = False
        self._last_rows_at = -HOT_WINDOW_S
        self._publish_lock = asyncio.Lock()

    def wake(self) -> None:
        self._event.set()

    def stop(self) -> None:
        self._stopping = True
        self._event.set()

    async def run(self) -> None:
        await self._publish()
        busy = True  # claim at once on start: rows may have waited for us
        while not self._stopping:
            delay = self._delay(busy)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event.wait(), delay)
                if self._stopping:
                    break
                if self._paused() > 0:
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

    def _paused(self) -> float:
        """Seconds the breaker still holds claims back; publishes open -> half-open."""
        state = self.breaker.state
        paused = self.breaker.ready_in()
        if self.breaker.state != state:
            log.info("consumer %s: circuit half-open, probing with one row", self.name)
            self._spawn_publish()
        return paused

    def _delay(self, busy: bool) -> float:
        """Seconds to wait before the next claim (0: claim now)."""
        paused = self._paused()
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
        while self._retries and self._retries[0] <= now:
            heapq.heappop(self._retries)
        if self._retries:
            return max(
                0.0, min(self.settings.sweep_interval.total_seconds(), self._retries[0] - now)
            )
        return self.settings.sweep_interval.total_seconds()

    async def _batch(self) -> bool:
        """Claim, deliver and complete one batch; True if it found rows."""
        limit = self.breaker.claim_limit(self.consumer.batch_size, self.consumer.concurrency)
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
        now = time.monotonic()
        while self._retries and self._retries[0] <= now:
            heapq.heappop(self._retries)
        if not batch:
            return False
        self._last_rows_at = time.monotonic()
        outcomes = await self._deliver(batch)
        log_attempts(self.name, batch, outcomes)
        await self._forget_invalid_devices(batch, outcomes)
        completions = self._decide(batch, outcomes)
        self._account(outcomes)
        metrics.observe_attempts(self.name, outcomes)
        if self.consumer.ordered:
            # A subject's next row becomes claimable only once this one is completed.
            await self._complete(completions)
        else:
            # The completion is written while the next batch is claimed and sent: rows
            # that arrived meanwhile do not also wait for this round trip. Safe, because
            # this batch's rows stay leased until it lands; bounded, so a slow database
            # slows the loop rather than piling up writes.
            while len(self._completing) >= MAX_PENDING_COMPLETIONS:
                await asyncio.wait(self._completing, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(self._complete(completions))
            self._completing.add(task)
            task.add_done_callback(self._completing.discard)
        # Go again until a claim comes back empty: rows may have arrived meanwhile, and for
        # an ordered consumer every completed row makes its successor the new head.
        return True

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

    async def _forget_invalid_devices(
        self, batch: Sequence[Delivery], outcomes: Sequence[Outcome]
    ) -> None:
        users = {d.outbox_id: str(d.payload.get("user_id")) for d in batch}
        invalid = [(users[o.outbox_id], t) for o in outcomes for t in o.invalid_tokens]
        if not invalid:
            return
        try:
            removed = await outbox.remove_push_devices(self.pool, invalid)
        except (PoolTimeout, psycopg.Error) as exc:
            # The next push to them fails the same way and tries again.
            log.warning("consumer %s: could not remove invalid devices: %s", self.name, exc)
        else:
            log.info(
                "consumer %s: removed %d push devices the provider refused", self.name, removed
            )

    def _decide(
        self, batch: Sequence[Delivery], outcomes: Sequence[Outcome]
    ) -> list[outbox.Completion]:
        attempts = {d.outbox_id: d.attempt for d in batch}
        completions = []
        for outcome in outcomes:
            attempt = attempts[outcome.outbox_id]
            delay = None
            if outcome.kind == "retry":
                delay = retry_delay(self.consumer.backoff, attempt, outcome.retry_after)
            completions.append(outbox.Completion(outcome, attempt, delay))
        return completions

    def _schedule_retries(self, completions: Sequence[outbox.Completion]) -> None:
        """Wake this loop when the retried rows are due. Armed once their completion is
        written (the retry time counts from then), never before: a timer firing while the
        rows were still leased would be spent on an empty claim."""
        retry_delays = [c.delay_s for c in completions if c.delay_s is not None]
        if retry_delays:
            now = time.monotonic()
            heapq.heappush(self._retries, now + min(retry_delays))
            # Also the latest, so that a spread-out batch does not wait for the sweep.
            heapq.heappush(self._retries, now + max(retry_delays))
            self._event.set()

    async def _complete(self, completions: Sequence[outbox.Completion]) -> None:
        give_up_at = time.monotonic() + self.lease_s * COMPLETE_LEASE_SHARE
        n = 0
        while True:
            n += 1
            try:
                recorded = await outbox.complete(
                    self.pool, self.name, self.consumer, completions, dispatcher=self.dispatcher
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
        self._schedule_retries(completions)
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

    def _account(self, outcomes: Sequence[Outcome]) -> None:
        failures = [o for o in outcomes if o.kind == "retry"]
        successes = len(outcomes) - len(failures)
        error = failures[0].error if failures else None
        if self.breaker.record(successes, len(failures), error):
            if self.breaker.state == "open":
                metrics.breaker_opened(self.name)
                log.warning(
                    "consumer %s: circuit open after %d failures in a row (last: %s); "
                    "paused, probing in %.1f s",
                    self.name,
                    self.breaker.failures,
                    error,
                    self.breaker.ready_in(),
                )
            elif self.breaker.state == "closed" and not self.breaker.failures:
                log.info("consumer %s: circuit closed, delivering again", self.name)
            self._spawn_publish()

    def _spawn_publish(self) -> None:
        task = asyncio.create_task(self._publish())
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def flush(self) -> None:
        """Wait for state updates still being written."""
        if self._publishing:
            await asyncio.gather(*self._publishing, return_exceptions=True)

    async def _publish(self) -> None:
        # Serialised, and each write takes the state as it is when it runs: the last write
        # is always the current state, whatever order the triggers came in.
        async with self._publish_lock:
            await self._write_state()

    async def _write_state(self) -> None:
        breaker = self.breaker
        opened_at = None
        if breaker.opened_at is not None:
            opened_at = datetime.now(UTC) - timedelta(seconds=time.monotonic() - breaker.opened_at)
        try:
            await outbox.save_consumer_state(
                self.pool,
                self.name,
                status="active",
                breaker=breaker.state,
                failures=breaker.failures,
                opened_at=opened_at,
                last_error=breaker.last_error if breaker.failures else None,
                dispatcher=self.dispatcher,
            )
        except (PoolTimeout, psycopg.Error) as exc:
            log.warning("consumer %s: could not publish its state: %s", self.name, exc)


class Dispatcher:
    def __init__(
        self,
        config: Config,
        database_url: str,
        *,
        name: str | None = None,
        transports: Mapping[str, Transport] | None = None,
        templates: Mapping[str, TypeTemplates] | None = None,
    ) -> None:
        self.config = config
        self._templates = templates
        self.settings = config.dispatcher
        self.database_url = database_url
        self.name = name or self.settings.name or default_name()
        self._transports = dict(transports) if transports is not None else None
        self.loops: dict[str, ConsumerLoop] = {}
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()

    def stop(self) -> None:
        """Finish the batches in flight, then return from run()."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wake(self, consumer: str) -> None:
        loop = self.loops.get(consumer)
        if loop is not None:
            loop.wake()
        else:
            log.debug("wake-up for %r, which this dispatcher does not deliver to", consumer)

    async def run(self) -> None:
        templates = self._templates
        if templates is None:
            templates = load_templates(self.config)
        transports = self._transports
        if transports is None:
            transports = build_transports(self.config, templates)
        seen_tag = self.config.notify.seen_tag
        pool_settings = DatabaseSettings(
            pool_min=1,
            pool_max=self.settings.pool_max,
            connect_timeout=self.config.database.connect_timeout,
            acquire_timeout=self.config.database.acquire_timeout,
        )
        pool = make_pool(self.database_url, pool_settings, name=f"dispatcher-{self.name}")
        await pool.open(wait=True)
        try:
            if self.config.event_types:
                async with pool.connection() as conn:
                    await sync_catalog(conn, self.config, templates)
            # After the catalog: the config's schedules name its event types. Chooses the
            # scheduler backend (logged) and keeps pg_cron's jobs in step.
            await scheduler.sync(self.database_url, self.config, chosen_by=self.name)
            for name, policy in destinations(self.config).items():
                if policy.enabled and name in transports:
                    channel = None
                    if isinstance(policy, Channel):
                        channel = outbox.ChannelClaim(policy.kind, seen_tag)
                    self.loops[name] = ConsumerLoop(
                        name,
                        policy,
                        transports[name],
                        pool,
                        self.settings,
                        dispatcher=self.name,
                        kafka=self.config.kafka,
                        channel=channel,
                    )
            async with metrics.exporter(
                self.settings.metrics_host,
                self.settings.metrics_port,
                pool,
                sorted(destinations(self.config)),
                lambda: {name: loop.breaker.state for name, loop in self.loops.items()},
            ):
                await self._run(pool)
        finally:
            for transport in {id(t): t for t in transports.values()}.values():
                with contextlib.suppress(Exception):
                    await transport.close()
            await pool.close(timeout=STOP_SIDE_S)

    async def _run(self, pool: Pool) -> None:
        for name, loop in self.loops.items():
            log.info(
                "dispatcher %s: consumer %s via %s, lease %.1f s%s",
                self.name,
                name,
                loop.consumer.transport,
                loop.lease_s,
                ", ordered" if loop.consumer.ordered else "",
            )
        tasks = [
            asyncio.create_task(loop.run(), name=f"loop-{n}") for n, loop in self.loops.items()
        ]
        side = [
            asyncio.create_task(self._jobs_worker(WAKE_QUEUE), name="wake-worker"),
            asyncio.create_task(self._census(pool), name="census"),
            # Runs of periodic schedules, and the Procrastinate backend's ticks.
            asyncio.create_task(
                self._jobs_worker(SCHEDULE_QUEUE, SCHEDULE_CONCURRENCY), name="scheduler"
            ),
        ]
        if self.config.event_types:
            # Its own worker: a long fan-out must not hold up the wake-ups.
            side.append(asyncio.create_task(self._jobs_worker(MATERIALIZE_QUEUE), name="fan-out"))
        self.ready.set()
        stopper = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and not task.cancelled() and task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            for loop in self.loops.values():
                loop.stop()
            # Loops finish the batch in hand (bounded by the consumer's timeout), so that
            # a clean stop leaves nothing to wait a lease out for; but not for ever (a
            # database that is gone): a loop cut short leaves its rows to the lease.
            _, late = await asyncio.wait(tasks, timeout=STOP_LOOPS_S) if tasks else ((), ())
            if late:
                log.warning("%d consumer loops did not stop in time: cancelled", len(late))
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=STOP_SIDE_S)
            for task in [stopper, *side]:
                task.cancel()
            # Procrastinate's workers unregister on the way out (bounded by their pool's
            # timeout, dispatcher/jobs.py).
            await asyncio.wait([stopper, *side], timeout=STOP_SIDE_S)
            for loop in self.loops.values():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(loop.flush(), STOP_SIDE_S)

    async def _jobs_worker(self, queue: str, concurrency: int = 1) -> None:
        await run_jobs_worker(
            lambda: jobs_app(self.database_url, self.name, self.wake, self.config),
            queue,
            name=f"dispatcher-{self.name}-{queue}",
            polling_s=self.settings.sweep_interval.total_seconds(),
            concurrency=concurrency,
        )

    async def _census(self, pool: Pool) -> None:
        """Report rows waiting for consumers this dispatcher does not deliver to."""
        active = sorted(self.loops)
        disabled = sorted(n for n, c in destinations(self.config).items() if not c.enabled)
        while True:
            try:
                waiting = await outbox.census(
                    pool, active=active, disabled=disabled, dispatcher=self.name
                )
            except (PoolTimeout, psycopg.Error) as exc:
                log.warning("census failed: %s", exc)
            else:
                for w in waiting:
                    if w.waiting:
                        log.warning(
                            "%d rows wait for %s consumer %r (oldest from %s); they are kept "
                            "until it is configured and enabled",
                            w.waiting,
                            w.status,
                            w.consumer,
                            w.oldest.isoformat() if w.oldest else "?",
                        )
            await asyncio.sleep(self.settings.census_interval.total_seconds())
