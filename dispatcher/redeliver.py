"""bin/redeliver: put failed, dead or delivered outbox rows back in the queue.

    bin/redeliver --consumer cashback                   # its failed and dead rows
    bin/redeliver --consumer cashback --status dead     # only those out of retries
    bin/redeliver --tag cashback-offers --status delivered --since 2024-05-01T10:00Z --dry-run
    bin/redeliver --consumer sms --event-type payment_receipt
    bin/redeliver --id 17 --id 18

Row states (--status, repeatable; default failed and dead), as outbox.status and the view
outbox_consumer_stats name them: `failed` was refused by the consumer (a permanent 4xx),
`dead` ran out of attempts or age, `delivered` was accepted (resend it, e.g. after the
consumer lost data). --consumer takes consumers and notification channels (email, sms,
push, inbox); --tag a seen mark's tag, --event-type a notification's type; --since/--until
bound the row's creation time. A name the config does not have is an error that lists the
valid ones (exit 2), not an empty selection. Everything is requeued in one transaction with a fresh
retry budget and one audit_log row (actor cli:<os user>), and the dispatchers are woken.
Running it twice is harmless: requeued rows are pending, and pending rows are never
selected.

The database is bin/dev's: --database-url, else DATABASE_URL, else the config's
database.url (MARK_NOTIFY_CONFIG, else config/mark-notify.toml, else config/example.toml),
else the embedded PostgreSQL in .data/pg-dev, started if need be.

The selection and the requeue are service/ops/redeliver.py's, shared with the admin panel.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import psycopg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from service.config.base import ConfigError
from service.config.load import Config
from service.database import CONNECTION_OPTIONS
from service.ops.audit import cli_actor
from service.ops.database_target import DatabaseNotFound, load_cli_config, resolve_database
from service.ops.redeliver import (
    DEFAULT_STATUSES,
    STATUSES,
    Candidate,
    RedeliverFilter,
    UnknownName,
    candidates_sync,
    check_names,
    requeue_sync,
)

# Above this many rows the requeue shows a progress bar.
PROGRESS_FROM = 5000
SHOWN_IDS = 20


def _time(value: str) -> datetime:
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bin/redeliver",
        description="Requeue failed, dead or delivered outbox rows.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("--consumer", action="append", help="consumer or channel (repeatable)")
    parser.add_argument("--tag", action="append", help="seen mark tag (repeatable)")
    parser.add_argument("--event-type", action="append", help="notification type (repeatable)")
    parser.add_argument(
        "--status",
        action="append",
        choices=STATUSES,
        help=f"row state (repeatable; default: {', '.join(DEFAULT_STATUSES)})",
    )
    parser.add_argument("--since", type=_time, help="created at or after (ISO 8601)")
    parser.add_argument("--until", type=_time, help="created before (ISO 8601)")
    parser.add_argument("--id", action="append", type=int, dest="ids", help="outbox id")
    parser.add_argument("--all", action="store_true", help="no filter: every row of the states")
    parser.add_argument("--dry-run", action="store_true", help="show what would be requeued")
    parser.add_argument(
        "--database-url", help="default: DATABASE_URL, else the config's, else bin/dev's"
    )
    args = parser.parse_args(argv)
    if not (args.all or _filter(args).narrowed()):
        parser.error(
            "give a filter (--consumer, --tag, --event-type, --id, --since, --until) or --all"
        )
    return args


def _filter(args: argparse.Namespace) -> RedeliverFilter:
    def tupled(values: list[str] | None) -> tuple[str, ...] | None:
        return tuple(values) if values else None

    return RedeliverFilter(
        consumers=tupled(args.consumer),
        tags=tupled(args.tag),
        event_types=tupled(args.event_type),
        ids=tuple(args.ids) if args.ids else None,
        since=args.since,
        until=args.until,
        # In the order given, once each.
        statuses=tuple(dict.fromkeys(args.status)) if args.status else DEFAULT_STATUSES,
    )


def _table(counts: Counter[tuple[str, str]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("consumer")
    table.add_column("status")
    table.add_column("rows", justify="right")
    for (consumer, status), count in sorted(counts.items()):
        table.add_row(consumer, status, str(count))
    return table


def _selected(rows: Sequence[Candidate]) -> Counter[tuple[str, str]]:
    return Counter((row.consumer, row.status) for row in rows)


def run(args: argparse.Namespace, console: Console) -> int:
    flt = _filter(args)
    config: Config | None = None
    if flt.consumers or flt.tags or flt.event_types:
        # The names are checked against the config, read as the database is found.
        try:
            config = load_cli_config()
            check_names(flt, config)
        except (ConfigError, UnknownName) as exc:
            print(f"redeliver: {exc}", file=sys.stderr)
            return 2
    try:
        target = resolve_database(args.database_url, config=config)
    except DatabaseNotFound as exc:
        raise SystemExit(f"redeliver: {exc}") from None
    # Autocommit: the selection holds nothing, and the requeue is its own transaction.
    with psycopg.connect(target.url, autocommit=True, options=CONNECTION_OPTIONS) as conn:
        rows = candidates_sync(conn, flt)
        if not rows:
            console.print("nothing to requeue")
            return 0
        if args.dry_run:
            console.print(_table(_selected(rows), "would requeue"))
            shown = ", ".join(str(row.id) for row in rows[:SHOWN_IDS])
            more = f" and {len(rows) - SHOWN_IDS} more" if len(rows) > SHOWN_IDS else ""
            console.print(
                f"would requeue {len(rows)} rows (dry run, nothing changed): ids {shown}{more}"
            )
            return 0
        ids = [row.id for row in rows]
        with Progress(console=console, transient=True, disable=len(ids) < PROGRESS_FROM) as bar:
            task = bar.add_task("requeueing", total=len(ids))
            done = requeue_sync(
                conn,
                ids,
                cli_actor(),
                statuses=flt.statuses,
                chosen_by=flt,
                progress=lambda n: bar.advance(task, n),
            )
    # What actually went back: a row another run requeued meanwhile is not counted.
    went = Counter(
        {
            (consumer, status): count
            for status, per_consumer in done.before.items()
            for consumer, count in per_consumer.items()
        }
    )
    console.print(_table(went, "requeued"))
    console.print(f"requeued {done.total} rows")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run(args, Console(highlight=False))


if __name__ == "__main__":
    from service.ops import cli_exit

    cli_exit.run(main)
