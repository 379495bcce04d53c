"""The dispatcher: one claim loop per consumer, woken by Procrastinate jobs and a slow sweep.

The write path defers a `dispatcher.wake` job per consumer (one pending at a time, by its
queueing lock). This process runs a Procrastinate worker on the "dispatch" queue whose
task only sets that consumer's wake-up event; each consumer's loop (dispatcher/loop.py)
then claims, delivers and completes its rows. Beside the loops it runs the fan-out and
scheduler workers, the census and the metrics exporter, and it stops them all in order.

Isolation: loops are independent tasks with their own transport pools, concurrency,
circuit breaker and rate limit; a consumer that hangs holds up only its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Mapping

import psycopg
from psycopg_pool import PoolTimeout

from dispatcher import dispatcher_metrics as metrics
from dispatcher import outbox
from dispatcher.bucket_leases import BucketLeases
from dispatcher.jobs import SCHEDULE_CONCURRENCY, jobs_app, run_jobs_worker
from dispatcher.loop import ConsumerLoop
from dispatcher.startup import StartUp
from dispatcher.transport_base import Pool, Transport
from dispatcher.transport_registry import build_transports, destinations
from service.config.core import DatabaseSettings
from service.config.load import Config
from service.config.notify import Channel
from service.database import make_pool
from service.notify.fanout import MATERIALIZE_QUEUE
from service.notify.templates import TypeTemplates, load_templates
from service.schedule_store import SCHEDULE_QUEUE
from service.wake import WAKE_QUEUE

log = logging.getLogger(__name__)

# On a stop, loops get this long to finish the batch in hand, side tasks and pools this
# long each to close; dispatcher/main.py's deadline covers anything beyond.
STOP_LOOPS_S = 15.0
STOP_SIDE_S = 2.0


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


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
        self.leases: BucketLeases | None = None
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

    async def run(self, start_up: StartUp | None = None) -> None:
        """Deliver until stop(); `start_up` (dispatcher/startup.py) runs once the pool is
        open, before the loops start."""
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
            if start_up is not None:
                await start_up(pool)
            served = [
                n for n, p in destinations(self.config).items() if p.enabled and n in transports
            ]
            leases = self.leases = BucketLeases(
                pool, self.name, served, self.settings.bucket_lease.total_seconds()
            )
            with contextlib.suppress(PoolTimeout, psycopg.Error):
                # Failing here, the loops start with no buckets and the keeper tries again.
                await leases.renew()
            for name, policy in destinations(self.config).items():
                if name in served:
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
                        buckets=functools.partial(leases.groups, name),
                        kafka=self.config.kafka,
                        channel=channel,
                    )
            async with metrics.exporter(
                self.settings.metrics_host,
                self.settings.metrics_port,
                pool,
                sorted(destinations(self.config)),
                lambda: {name: loop.breaker.state for name, loop in self.loops.items()},
                lambda: {name: len(leases.buckets(name)) for name in self.loops},
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
            asyncio.create_task(self._keep_leases(), name="bucket-leases"),
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
            if self.leases is not None:
                # The batches in hand are completed: the others may take the buckets now.
                with contextlib.suppress(TimeoutError, PoolTimeout, psycopg.Error):
                    await asyncio.wait_for(self.leases.release(), STOP_SIDE_S)

    async def _keep_leases(self) -> None:
        assert self.leases is not None

        def claim_now(changed: Mapping[str, tuple[int, ...]]) -> None:
            for consumer in changed:
                self.wake(consumer)

        await self.leases.run(claim_now)

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
