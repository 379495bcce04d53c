"""Retention under load: the intake's p99 while 1,000,000 old delivered rows are pruned.

A template database is seeded once, set-based: `--rows` delivered outbox rows (default
1,000,000) last changed 8 to 38 days ago, each with its attempt, plus `--young` delivered
rows of the last 6 days that must stay. Each run gets a copy of it and the real API
(uvicorn, as bench.seen_intake runs it), and one open-loop load generator sends
`POST /v1/seen` at `--rate` per second for the whole run, latency counted from each
request's scheduled time. After `--baseline` seconds the prune starts (the Python driver
the Procrastinate backend runs, or with `--procedure` the CALL pg_cron runs), and the load
stops when it ends. The intake's p99 while the prune ran is compared with its p99 over the
`--baseline` seconds just before it, with no prune: same run, same process, same database
(a p99 over a few seconds alone swings by 2x from run to run on two cores). Every
run ends with a count: the old rows and their attempts are gone, the young ones and every
row the intake recorded are there. A prune shorter than `--min-window` is measured over
that many seconds from its start (the requests that queued behind it finish after it).

With `--days`, retention by whole day partitions against the row-by-row prune: the old
rows are seeded into one day 10 days ago, in two templates: one where that day has its
partitions of outbox and delivery_attempts (made first with ensure_partitions(), so the
prune drops the day whole: drop_retained_partitions()) and one where it has none (the
rows are in the default partitions, so the prune deletes them in batches, as before the
day partitions). Runs alternate between the two, the same intake against each; the
attempts' age is set to the outbox rows' (`delivered`) in both, so that the attempts'
day goes in the same prune rather than at 30 days. A third variant, the control, is a copy
of the first template under the same load with no prune at all: how far the p99 of one
window differs from the next's without any retention, beside which the other two are read.

    .venv/bin/python -m bench.prune [--runs 3] [--rate 1000] [--batch 5000] [--quick]
    .venv/bin/python -m bench.prune --days [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from bench.fanout import copy_of
from bench.harness import (
    Figure,
    drop_database,
    fresh_database,
    loadgen,
    loadgen_argv,
    loadgen_result,
    median,
    print_table,
    run_api,
    server_url,
    tempdir,
    tokens_file,
    write_config,
)
from bench.loadgen import percentile
from bench.sql import bq
from service.config.base import ROOT
from service.config.schedule import RetentionSettings
from service.schedule.retention import params, prune
from service.sql import q

CONNECTIONS = 64
# Requests scheduled in the first seconds meet cold connections and a cold API: not counted.
SETTLE_S = 3.0
# --days: the old rows' day, past the `delivered` age (7 days) and clear of the young rows.
DAY_AGO = 10


@dataclass
class Window:
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    max: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


@dataclass
class Samples:
    alone: Window = field(default_factory=Window)
    pruning: Window = field(default_factory=Window)
    ratio: list[float] = field(default_factory=list)
    prune_s: list[float] = field(default_factory=list)
    rows_per_s: list[float] = field(default_factory=list)
    batches: list[float] = field(default_factory=list)
    days: list[float] = field(default_factory=list)


@dataclass
class Variant:
    label: str
    template: str
    # The day partition the old rows were seeded into, if they have one.
    day: date | None = None
    # False: the control, the same copy and load with no prune (how much the p99 drifts).
    prune: bool = True
    samples: Samples = field(default_factory=Samples)


def seed_template(
    server: str, rows: int, young: int, day: date | None = None, partition: bool = False
) -> str:
    """Old rows over 8-38 days ago; or, given a day, all in that day, with the day's own
    partitions when `partition` (else they land in the default partitions)."""
    url = fresh_database(server, "prune_tpl")
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        old: dict[str, Any] = {
            "rows": rows,
            "oldest": timedelta(days=38),
            "newest": timedelta(days=8),
        }
        if day is not None:
            if partition:
                conn.execute(bq("retention_make_day"), {"day": day})
            # An hour inside the day at each end: the seed's now() is a little later.
            now = datetime.now(UTC)
            old["oldest"] = now - datetime.combine(day, clock(1), UTC)
            old["newest"] = now - datetime.combine(day, clock(23), UTC)
        conn.execute(bq("retention_seed"), old)
        recent = {"rows": young, "oldest": timedelta(days=6), "newest": timedelta(hours=1)}
        conn.execute(bq("retention_seed"), recent)
        # As a long-lived table would be: vacuumed, hint bits set, statistics known.
        conn.execute("VACUUM ANALYZE outbox")
        conn.execute("VACUUM ANALYZE delivery_attempts")
        where = ", ".join(
            f"{n:,} in {part}" for part, n in conn.execute(bq("retention_rows_by_partition"))
        )
        print(
            f"seeded {rows:,} old and {young:,} young delivered rows with their attempts "
            f"in {time.perf_counter() - t0:.1f} s: outbox rows {where}"
        )
    return url


async def run_prune(url: str, settings: RetentionSettings, procedure: bool) -> int:
    """Prune as a backend would; the batches it took (0: unknown, the procedure's)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if procedure:
            await conn.execute(q("call_prune_retention"), params(settings))
            return 0
        pruned = await prune(conn, settings)
        return pruned["batches"]


def days_left(url: str, day: date) -> int:
    """How many of the day's two partitions (outbox, delivery_attempts) are still there."""
    names = {"outbox": f"outbox_p{day:%Y_%m_%d}", "attempts": f"delivery_attempts_p{day:%Y_%m_%d}"}
    with psycopg.connect(url) as conn:
        row = conn.execute(bq("retention_days_left"), names).fetchone()
    assert row is not None
    return int(row[0])


def window(samples: list[tuple[float, float]], start: float, end: float) -> list[float]:
    return [latency for at, latency in samples if start <= at < end]


def check_counts(url: str, young: int, recorded: int) -> None:
    with psycopg.connect(url) as conn:
        row = conn.execute(bq("retention_counts")).fetchone()
    assert row is not None
    delivered, pending, attempts = (int(v) for v in row)
    if (delivered, attempts) != (young, young) or pending != recorded:
        raise SystemExit(
            f"after the prune: {delivered} delivered rows and {attempts} attempts (want "
            f"{young} of each: only the young ones), {pending} intake rows for {recorded} "
            "recorded"
        )


def one_run(
    server: str,
    variant: Variant,
    settings: RetentionSettings,
    args: argparse.Namespace,
    directory: Path,
    run: int,
) -> dict[str, Any]:
    tokens = tokens_file(directory)
    config = write_config(directory)
    with copy_of(server, variant.template) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            # The copy's pages are written out now, not by a checkpoint in mid-run.
            conn.execute("CHECKPOINT")
        with run_api(config, url, workers=args.workers) as api:
            warm = loadgen(api.url, tokens, connections=CONNECTIONS, duration=1, prefix=f"w{run}")
            argv = loadgen_argv(
                api.url,
                tokens,
                connections=CONNECTIONS,
                duration=24 * 3600,  # until told to stop
                rate=args.rate,
                prefix=f"p{run}",
                keep_samples=True,
            )
            load = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            try:
                time.sleep(SETTLE_S + args.baseline)
                load_avg = os.getloadavg()[0]
                started = time.time()
                batches = (
                    asyncio.run(run_prune(url, settings, args.procedure)) if variant.prune else 0
                )
                ended = time.time() if variant.prune else started
                window_end = max(ended, started + args.min_window)
                time.sleep(max(0.0, window_end - time.time()))
            finally:
                load.send_signal(signal.SIGTERM)
                out, _ = load.communicate(timeout=120)
            result = loadgen_result(out)
        if variant.prune:
            check_counts(url, args.young, warm["recorded"] + result["recorded"])
        left = days_left(url, variant.day) if variant.day and variant.prune else 2
    samples = [(float(at), float(lat)) for at, lat in result["samples"]]
    alone_s = args.baseline
    if args.timeline:
        print_timeline(samples, started, ended)
    return {
        "alone": window(samples, started - alone_s, started),
        "alone_s": alone_s,
        "pruning": window(samples, started, window_end),
        "window_s": window_end - started,
        "prune_s": ended - started,
        "days": 2 - left,
        "batches": batches,
        "errors": result["errors"],
        "non_200": sum(n for code, n in result["statuses"].items() if code != "200"),
        "load_avg": load_avg,
    }


def print_timeline(samples: list[tuple[float, float]], started: float, ended: float) -> None:
    """The intake's latency second by second around the prune: where its slow requests are."""
    print(f"  second (prune {ended - started:.2f} s): requests, p50, p99, max ms")
    for second in range(-5, 12):
        lat = window(samples, started + second, started + second + 1)
        if lat:
            print(
                f"  {second:+3d}: {len(lat):5d} {percentile(lat, 0.5) * 1000:6.1f} "
                f"{percentile(lat, 0.99) * 1000:6.1f} {max(lat) * 1000:6.1f}"
            )


def record(samples: Samples, measured: dict[str, Any], rows: int) -> str:
    for name, win in (("alone", samples.alone), ("pruning", samples.pruning)):
        latencies = measured[name]
        win.p50.append(percentile(latencies, 0.50) * 1000)
        win.p99.append(percentile(latencies, 0.99) * 1000)
        win.max.append(max(latencies, default=0.0) * 1000)
        win.seconds.append(measured["alone_s"] if name == "alone" else measured["window_s"])
    samples.ratio.append(samples.pruning.p99[-1] / samples.alone.p99[-1])
    samples.prune_s.append(measured["prune_s"])
    samples.rows_per_s.append(rows / measured["prune_s"] if measured["prune_s"] else 0.0)
    samples.days.append(measured["days"])
    if measured["batches"]:  # the procedure does not say
        samples.batches.append(measured["batches"])
    return (
        f"p99 {samples.alone.p99[-1]:.1f} ms alone ({measured['alone_s']:.0f} s), "
        f"{samples.pruning.p99[-1]:.1f} ms while pruning ({measured['window_s']:.0f} s): "
        f"{samples.ratio[-1]:.2f}x, max {samples.pruning.max[-1]:.1f} ms; prune "
        f"{measured['prune_s']:.1f} s ({samples.rows_per_s[-1]:,.0f} rows/s, day "
        f"partitions dropped {measured['days']}); errors "
        f"{measured['errors']}, non-200 {measured['non_200']}; load average "
        f"{measured['load_avg']:.2f} before the prune"
    )


def variants(server: str, args: argparse.Namespace) -> list[Variant]:
    if not args.days:
        return [Variant("prune", seed_template(server, args.rows, args.young))]
    day = (datetime.now(UTC) - timedelta(days=DAY_AGO)).date()
    made: list[Variant] = []
    try:
        for label, partition in (("by day", True), ("row by row", False)):
            template = seed_template(server, args.rows, args.young, day, partition)
            made.append(Variant(label, template, day if partition else None))
        made.append(Variant("control, no prune", made[0].template, day, prune=False))
    except BaseException:
        for template in {v.template for v in made}:
            drop_database(server, template)
        raise
    return made


def report(runs: list[Variant], args: argparse.Namespace, settings: RetentionSettings) -> None:
    def row(win: Window) -> list[Figure]:
        return [
            Figure("p50", "ms", win.p50),
            Figure("p99", "ms", win.p99),
            Figure("max", "ms", win.max),
            Figure("window", "s", win.seconds),
        ]

    def prefix(v: Variant) -> str:
        # One variant keeps the labels of the tables documented before --days.
        return f"{v.label}: " if len(runs) > 1 else ""

    driver = "CALL prune_retention" if args.procedure else "prune()"
    print_table(
        f"POST /v1/seen at {args.rate:,.0f} req/s, {args.workers} API workers; median of "
        f"{args.runs} (min-max)",
        [
            (f"{prefix(v)}{name}", row(win))
            for v in runs
            for name, win in (
                ("intake alone", v.samples.alone),
                ("intake while pruning", v.samples.pruning),
            )
        ],
    )
    print_table(
        f"{driver} of {args.rows:,} rows and their attempts, batch {args.batch}, pause "
        f"{args.pause_ms:g} ms, attempts kept {settings.attempts.days} days",
        [
            (
                v.label,
                [
                    Figure("p99 ratio", "x", v.samples.ratio),
                    Figure("duration", "s", v.samples.prune_s),
                    Figure("outbox rows/s", "rows/s", v.samples.rows_per_s),
                    Figure("batches", "n", v.samples.batches),
                    Figure("days dropped", "n", v.samples.days),
                ],
            )
            for v in runs
        ],
    )
    if not args.days:
        verdict = "met" if median(runs[0].samples.ratio) <= 2.0 else "NOT met"
        print(f"target: p99 while pruning <= 2x the p99 alone: {verdict}")
        return
    by_day, by_row, control = runs[0].samples, runs[1].samples, runs[2].samples
    pairs = [a / b for a, b in zip(by_day.ratio, by_row.ratio, strict=True)]
    print(
        f"p99 ratio by day / row by row: {median(by_day.ratio) / median(by_row.ratio):.2f} "
        f"(per run {min(pairs):.2f}-{max(pairs):.2f}); retention took "
        f"{median(by_day.prune_s):.2f} s by day, {median(by_row.prune_s):.1f} s row by row"
    )
    print(
        f"p99 ratio by day / control (the same window, no prune): "
        f"{median(by_day.ratio) / median(control.ratio):.2f}"
    )
    verdict = "met" if median(by_day.ratio) <= 1.1 else "NOT met"
    print(f"target (issue 18): p99 while dropping a day <= 1.1x the p99 alone: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000, help="old rows to prune")
    parser.add_argument("--young", type=int, default=100_000, help="young rows that stay")
    parser.add_argument("--rate", type=float, default=1000.0, help="intake requests/s")
    parser.add_argument(
        "--baseline", type=float, default=60.0, help="seconds of intake alone before the prune"
    )
    parser.add_argument(
        "--min-window", type=float, default=10.0, help="seconds measured from the prune's start"
    )
    parser.add_argument("--batch", type=int, default=RetentionSettings().batch_size)
    parser.add_argument(
        "--pause-ms",
        type=float,
        default=RetentionSettings().pause.total_seconds() * 1000,
        help="retention.pause",
    )
    parser.add_argument("--procedure", action="store_true", help="CALL prune_retention()")
    parser.add_argument(
        "--days", action="store_true", help="one day partition dropped whole vs row by row"
    )
    parser.add_argument(
        "--timeline", action="store_true", help="print the intake's latency per second"
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--quick", action="store_true", help="1 run, 100,000 rows: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rows, args.young, args.baseline = 1, 100_000, 10_000, 5.0
    settings = RetentionSettings(batch_size=args.batch, pause=timedelta(milliseconds=args.pause_ms))
    if args.days:
        # The attempts' day then goes in the same prune as the outbox's (else at 30 days).
        settings = msgspec.structs.replace(settings, attempts=settings.delivered)

    server = server_url()
    runs = variants(server, args)
    try:
        with tempdir() as tmp:
            for run in range(args.runs):
                # A B, then B A: neither always goes first.
                for v in runs if run % 2 == 0 else runs[::-1]:
                    measured = one_run(server, v, settings, args, Path(tmp), run)
                    line = record(v.samples, measured, args.rows)
                    print(f"run {run + 1}/{args.runs} {v.label}: {line}", flush=True)
    finally:
        for template in {v.template for v in runs}:
            drop_database(server, template)
    report(runs, args, settings)


if __name__ == "__main__":
    main()
