"""The naive delivery baseline as a process: a Procrastinate worker running one job per
outbox row (`dispatcher.deliver_one`, deferred by bench/naive.py's writer), each claiming,
sending and completing its row. Config and database as for dispatcher.main.

    python -m bench.naive_worker
"""

from __future__ import annotations

import asyncio
import os
import signal

import procrastinate

from bench.naive import deliver_one_row
from dispatcher.main import run
from dispatcher.transport_registry import build_transports
from service.config.load import load_config
from service.database import make_pool

CONCURRENCY = 16


async def main() -> None:
    config = load_config()
    url = os.environ["DATABASE_URL"]
    transports = build_transports(config)
    pool = make_pool(url, config.database, name="naive-worker")
    await pool.open(wait=True)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="dispatcher.deliver_one", queue="dispatch")
    async def deliver_one(outbox_id: int) -> None:
        name = next(iter(config.consumers))
        await deliver_one_row(pool, transports[name], name, config.consumers[name], outbox_id)

    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=["dispatch"],
                concurrency=CONCURRENCY,
                delete_jobs="successful",
                install_signal_handlers=False,
            )
        )
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    await pool.close()


if __name__ == "__main__":
    run(main())
