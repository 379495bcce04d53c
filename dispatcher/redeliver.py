"""bin/redeliver: put dead, failed or delivered outbox rows back in the queue.

    bin/redeliver --consumer promotions                 # its dead and failed rows
    bin/redeliver --tag cashback --status delivered --since 2024-05-01T10:00Z --dry-run
    bin/redeliver --id 17 --id 18

Classes (--status, repeatable; default dead and failed): `dead` ran out of attempts or
age, `failed` was refused by the consumer (a permanent 4xx), `delivered` was accepted
(resend it, e.g. after the consumer lost data). --since/--until bound the row's creation
time (the mark's). Everything is requeued in one transaction with a fresh retry budget,
and the dispatchers are woken. Running it twice is harmless: requeued rows are pending,
and pending rows are never selected.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import psycopg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from service.config import ConfigError, load_config
from service.database import CONNECTION_OPTIONS
from service.sql import q
from service.wake import WAKE_QUEUE, WAKE_TASK

CLASSES = ("dead", "failed", "delivered")
CHUNK = 1000
# Above this many rows the requeue shows a progress bar.
PROGRESS_FROM = 5000


def _time(value: str) -> datetime:
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bin/redeliver",
        description="Requeue dead, failed or delivered outbox rows.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("--consumer", action="append", help="consumer name (repeatable)")
    parser.add_argument("--tag", action="append", help="tag (repeatable)")
    parser.add_argument(
        "--status", action="append", choices=CLASSES, help="row class (default: dead, failed)"
    )
    parser.add_argument("--since", type=_time, help="created at or after (ISO 8601)")
    parser.add_argument("--until", type=_time, help="created before (ISO 8601)")
    parser.add_argument("--id", action="append", type=int, dest="ids", help="outbox id")
    parser.add_argument("--all", action="store_true", help="no filter: every row of the class")
    parser.add_argument("--dry-run", action="store_true", help="show what would be requeued")
    parser.add_argument("--database-url", help="default: DATABASE_URL, else the config's")
    args = parser.parse_args(argv)
    if not (args.consumer or args.tag or args.ids or args.since or args.until or args.all):
        parser.error("give a filter (--consumer, --tag, --id, --since, --until) or --all")
    return args


def _database_url(args: argparse.Namespace) -> str:
    url = args.database_url or os.environ.get("DATABASE_URL")
    if url:
        return str(url)
    try:
        url = load_config().database.url
    except ConfigError as exc:
        raise SystemExit(f"redeliver: no DATABASE_URL and no usable config: {exc}") from None
    if not url:
        raise SystemExit("redeliver: set DATABASE_URL or --database-url")
    return url


def _summary(rows: list[tuple[Any, ...]], title: str) -> Table:
    counts = Counter((row[1], row[3]) for row in rows)
    table = Table(title=title)
    table.add_column("consumer")
    table.add_column("class")
    table.add_column("rows", justify="right")
    for (consumer, cls), count in sorted(counts.items()):
        table.add_row(consumer, cls, str(count))
    return table


def run(args: argparse.Namespace, console: Console) -> int:
    params: dict[str, object] = {
        "consumers": args.consumer,
        "tags": args.tag,
        "ids": args.ids,
        "since": args.since,
        "until": args.until,
        "classes": list(args.status or ["dead", "failed"]),
    }
    with (
        psycopg.connect(_database_url(args), options=CONNECTION_OPTIONS) as conn,
        conn.transaction(),
    ):
        rows = conn.execute(q("redeliver_candidates"), params).fetchall()
        if not rows:
            console.print("nothing to requeue")
            return 0
        if args.dry_run:
            console.print(_summary(rows, "would requeue"))
            shown = ", ".join(str(row[0]) for row in rows[:20])
            more = f" and {len(rows) - 20} more" if len(rows) > 20 else ""
            console.print(
                f"would requeue {len(rows)} rows (dry run, nothing changed): ids {shown}{more}"
            )
            return 0
        ids = [row[0] for row in rows]
        requeued = 0
        with Progress(console=console, transient=True, disable=len(ids) < PROGRESS_FROM) as bar:
            task = bar.add_task("requeueing", total=len(ids))
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                result = conn.execute(
                    q("redeliver_requeue"),
                    {"ids": chunk, "wake_queue": WAKE_QUEUE, "wake_task": WAKE_TASK},
                ).fetchall()
                requeued += sum(count for _, count in result)
                bar.advance(task, len(chunk))
    console.print(_summary(rows, "requeued"))
    console.print(f"requeued {requeued} rows")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run(args, Console(highlight=False))


if __name__ == "__main__":
    sys.exit(main())
