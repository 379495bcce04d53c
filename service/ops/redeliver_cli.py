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
database.url (--config, else MARK_NOTIFY_CONFIG, else config/mark-notify.toml, else
config/example.toml), else the embedded PostgreSQL in .data/pg-dev, started if need be.

The selection and the requeue are service/ops/redeliver.py's, shared with the admin panel.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from service.config.load import Config
from service.ops import cli
from service.ops.redeliver import (
    DEFAULT_STATUSES,
    STATUSES,
    Candidate,
    RedeliverFilter,
    UnknownName,
    candidates,
    check_names,
    requeue,
)

# Above this many rows the requeue shows a progress bar.
PROGRESS_FROM = 5000
SHOWN_IDS = 20


def _time(value: str) -> datetime:
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parser() -> argparse.ArgumentParser:
    parser = cli.command_parser(
        "bin/redeliver", "Requeue failed, dead or delivered outbox rows.", cli.epilog(__doc__)
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
    return parser


def parse(argv: list[str] | None) -> cli.Command:
    chosen = parser()
    command = cli.parse(chosen, argv)
    if not (command.args.all or _filter(command.args).narrowed()):
        chosen.error(
            "give a filter (--consumer, --tag, --event-type, --id, --since, --until) or --all"
        )
    return command


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


async def run(command: cli.Command) -> int:
    args = command.args
    console = Console(highlight=False)
    flt = _filter(args)
    config: Config | None = None
    if flt.consumers or flt.tags or flt.event_types:
        # The names are checked against the config, read as the database is found.
        config = command.config()
        check_names(flt, config)
    target = command.database(config)
    # Autocommit: the selection holds nothing, and the requeue is its own transaction.
    async with command.connect(target.url) as conn:
        rows = await candidates(conn, flt)
        if not rows:
            console.print("nothing to requeue")
            return cli.OK
        if args.dry_run:
            console.print(_table(_selected(rows), "would requeue"))
            shown = ", ".join(str(row.id) for row in rows[:SHOWN_IDS])
            more = f" and {len(rows) - SHOWN_IDS} more" if len(rows) > SHOWN_IDS else ""
            console.print(
                f"would requeue {len(rows)} rows (dry run, nothing changed): ids {shown}{more}"
            )
            return cli.OK
        ids = [row.id for row in rows]
        with Progress(console=console, transient=True, disable=len(ids) < PROGRESS_FROM) as bar:
            task = bar.add_task("requeueing", total=len(ids))
            done = await requeue(
                conn,
                ids,
                command.actor,
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
    return cli.OK


def main(argv: list[str] | None = None) -> int:
    return cli.run(parse(argv), run, usage=(UnknownName,))


if __name__ == "__main__":
    cli.exit_with(main)
