"""`python -m dispatcher.main`: run a dispatcher until SIGTERM or SIGINT.

Configuration as for the API (MARK_NOTIFY_CONFIG, DATABASE_URL, MARK_NOTIFY__... overrides,
see service/config/load.py); the [dispatcher] section tunes lease, sweep and name. Before the
loops start it mirrors the catalog and chooses the scheduler backend (dispatcher/startup.py).
On a signal the batches in flight are finished and completed before exit, so a clean stop
leaves no row to wait out a lease; a second signal exits at once, and so does the process
when the stop is still not done after STOP_DEADLINE_S (e.g. its database is gone).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from typing import Any

from dispatcher.startup import StartUp, start_up
from dispatcher.worker import Dispatcher
from service.config.base import ConfigError
from service.config.load import load_config
from service.database import resolve_url
from service.logs import configure
from service.metrics import MULTIPROC_ENV, multiprocess_dir
from service.notify.templates import load_templates
from service.schedule.backend import SchedulerUnavailable
from service.schedule_store import ScheduleError

# A stop's hard deadline: the graceful one (dispatcher/worker.py, STOP_LOOPS_S and
# STOP_SIDE_S) plus a margin.
STOP_DEADLINE_S = 22.0


async def _serve(dispatcher: Dispatcher, start_up: StartUp) -> None:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: int) -> None:
        if dispatcher.stopping:
            logging.getLogger(__name__).warning("second signal: exiting now")
            os._exit(1)
        logging.getLogger(__name__).info("signal %d: finishing batches in flight", signum)
        dispatcher.stop()
        # Whatever the database or a consumer does, the process is gone by then (below
        # docker-compose's 30 s stop_grace_period): a thread, as it must fire even if
        # the event loop is stuck.
        deadline = threading.Timer(STOP_DEADLINE_S, _exit_at_deadline)
        deadline.daemon = True
        deadline.start()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await dispatcher.run(start_up)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _exit_at_deadline() -> None:
    logging.getLogger(__name__).error(
        "still stopping after %.0f s: exiting; rows in flight return after their lease",
        STOP_DEADLINE_S,
    )
    logging.shutdown()
    os._exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Deliver outbox rows to their consumers.")
    parser.add_argument("--name", help="dispatcher name (default: [dispatcher].name or host-pid)")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    # JSON lines, or text with MARK_NOTIFY_LOG_FORMAT=text (service/logs.py).
    configure("dispatcher", level=args.log_level)
    try:
        config = load_config()
        # Compiled before anything starts: a broken template stops the process here,
        # naming the file and the reason.
        templates = load_templates(config)
    except ConfigError as exc:
        print(f"mark-notify dispatcher: {exc}", file=sys.stderr)
        return 2
    if multiprocess_dir():
        # Its counters would land in the API workers' files and be exported twice.
        print(
            f"mark-notify dispatcher: unset {MULTIPROC_ENV} here: it is the API workers' "
            "(docs/observability.md); a dispatcher serves its own metrics on "
            "[dispatcher].metrics_port",
            file=sys.stderr,
        )
        return 2
    url = resolve_url(config.database)
    dispatcher = Dispatcher(config, url, name=args.name, templates=templates)
    try:
        run(_serve(dispatcher, start_up(config, url, templates, name=dispatcher.name)))
    except (SchedulerUnavailable, ScheduleError) as exc:
        # Found at start-up (the scheduler's sync): a config to fix, not a crash to debug.
        print(f"mark-notify dispatcher: {exc}", file=sys.stderr)
        return 2
    return 0


def run(main: Coroutine[Any, Any, None]) -> None:
    """uvloop when installed (it comes with uvicorn[standard]): its socket I/O costs a
    fraction of asyncio's, and the dispatcher spends much of its CPU there."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


if __name__ == "__main__":
    sys.exit(main())
