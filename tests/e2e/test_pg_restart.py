"""After PostgreSQL restarts, the dispatcher is back at full speed by itself: its wake-up
listener and every other background part reconnect, and its pools drop dead connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from service import migrate
from tests.chaos_support import (
    PrivatePostgres,
    dispatcher_process,
    service_env,
    wait_log,
)
from tests.consumers import (
    RecordingConsumer,
    add_marks,
    client,
    http_consumer,
    to_toml,
    wait_until,
)
from tests.support import config_data, serve

SWEEP_S = 5.0
# An idle consumer woken by its wake-up gets a mark in milliseconds; through the sweep it
# would take up to SWEEP_S.
WAKE_LATENCY_S = 1.0


@pytest.fixture
async def private_pg() -> AsyncIterator[PrivatePostgres]:
    with PrivatePostgres() as pg:
        migrate.upgrade(pg.url)
        yield pg


async def _mark_latency(consumer: RecordingConsumer, url: str, item: str) -> float:
    """Seconds from a committed mark to its arrival at the consumer."""
    before = len(consumer.accepted)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await add_marks(conn, "promotions", "promotions", [(client("u-late"), item)])
    sent = time.monotonic()

    async def arrived() -> bool:
        return len(consumer.accepted) > before

    await wait_until(arrived, 3 * SWEEP_S, f"mark {item} at the consumer", step=0.005)
    return consumer.requests[-1].at - sent


@pytest.mark.parametrize("down_for_s", [0.5, 6.0])
async def test_after_a_postgres_restart_an_idle_consumer_gets_a_mark_at_once(
    private_pg: PrivatePostgres, tmp_path: Path, down_for_s: float
) -> None:
    consumer = RecordingConsumer()
    async with serve(consumer.app) as base:
        consumers = {"promotions": http_consumer(f"{base}/seen")}
        dispatcher_settings: dict[str, Any] = {"sweep_interval": SWEEP_S, "metrics_port": 0}
        data = config_data(private_pg.url, consumers=consumers, dispatcher=dispatcher_settings)
        data["tags"] = {k: data["tags"][k] for k in ("promotions", "notifications")}
        config_file = tmp_path / "dispatcher.toml"
        config_file.write_text(to_toml(data))
        dispatcher = dispatcher_process(
            service_env(config_file, private_pg.url), "survivor", tmp_path / "dispatcher.log"
        )
        dispatcher.start()
        try:
            assert wait_log(dispatcher, "consumer promotions via http", 30)
            # Every pool has connections to lose, and the listener is listening.
            for n in range(3):
                await _mark_latency(consumer, private_pg.url, f"warm-{n}")
            await asyncio.sleep(1.5)

            await asyncio.to_thread(private_pg.restart, down_for_s)
            # The server accepts connections again; give nothing else a head start.
            latencies = []
            for n in range(4):
                latencies.append(await _mark_latency(consumer, private_pg.url, f"after-{n}"))
                await asyncio.sleep(1.5)  # idle again (past HOT_WINDOW_S): only a wake-up is fast
        finally:
            dispatcher.stop()
        log = dispatcher.log_tail(2000)

    # Recovery: the very first mark after the restart is not left to the sweep...
    print(f"mark latencies after the restart: {latencies}")
    assert latencies[0] < SWEEP_S / 2, (latencies, log[-3000:])
    # ... and the marks after it are woken up, not swept: the listener is back. (Not every
    # one: Procrastinate can drop a wake-up now and then, restart or not; see
    # ConsumerLoop._delay. Without the listener every one takes about SWEEP_S.)
    assert min(latencies[1:]) < WAKE_LATENCY_S, (latencies, log[-3000:])
    assert consumer.duplicates == 0
