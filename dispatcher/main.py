"""`python -m dispatcher.main`: run a dispatcher until SIGTERM or SIGINT.

Configuration as for the API (MARK_NOTIFY_CONFIG, DATABASE_URL, MARK_NOTIFY__... overrides,
see service/config.py); the [dispatcher] section tunes lease, sweep and name. On a signal
the batches in flight are finished and completed before exit, so a clean stop leaves no
row to wait out a lease; a second signal exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from dispatcher.worker import Dispatcher
from service.config import ConfigError, load_config
from service.database import resolve_url
from service.notify.templates import load_templates
from service.schedule.backend import SchedulerUnavailable
from service.schedule.periodic import ScheduleError


async def _serve(dispatcher: Dispatcher) -> None:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: int) -> None:
        if dispatcher.stopping:
            logging.getLogger(__name__).warning("second signal: exiting now")
            os._exit(1)
        logging.getLogger(__name__).info("signal %d: finishing batches in flight", signum)
        dispatcher.stop()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await dispatcher.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Deliver outbox rows to their consumers.")
    parser.add_argument("--name", help="dispatcher name (default: [dispatcher].name or host-pid)")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Every wake-up job would otherwise log two INFO lines.
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    try:
        config = load_config()
        # Compiled before anything starts: a broken template stops the process here,
        # naming the file and the reason.
        templates = load_templates(config)
    except ConfigError as exc:
        print(f"mark-notify dispatcher: {exc}", file=sys.stderr)
        return 2
    dispatcher = Dispatcher(
        config, resolve_url(config.database), name=args.name, templates=templates
    )
    try:
        run(_serve(dispatcher))
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
