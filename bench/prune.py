"""Retention under load: the intake's p99 while 1,000,000 old delivered rows are pruned.

A template database is seeded once, set-based: `--rows` delivered outbox rows (default
1,000,000) last changed 8 to 38 days ago, each with its attempt, plus `--young` delivered
rows of the last 6 days that must stay. Each run gets a copy of it and the real API
(uvicorn, as bench.seen_intake runs it), and one open-loop load generator sends
`POST /v1/seen` at `--rate` per second for the whole run, latency counted from each
request's scheduled time. After `--baseline` seconds the prune starts (the Python driver
the Procrastinate backend runs, or with `--procedure` the CALL pg_cron runs), and the load
stops when it ends. The intake's p99 while the prune ran is compared with its p99 over as
many seconds just before it, with no prune: same run, same process, same database. Every
run ends with a count: the old rows and their attempts are gone, the young ones and every
row the intake recorded are there.

    .venv/bin/python -m bench.prune [--runs 3] [--rate 1000] [--batch 5000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

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


def seed_template(server: str, rows: int, young: int) -> str:
    url = fresh_database(server, "prune_tpl")
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        old = {"rows": rows, "oldest": timedelta(days=38), "newest": timedelta(days=8)}
        conn.execute(bq("retention_seed"), old)
        recent = {"rows": young, "oldest": timedelta(days=6), "newest": timedelta(hours=1)}
        conn.execute(bq("retention_seed"), recent)
        # As a long-lived table would be: vacuumed, hint bits set, statistics known.
        conn.execute("VACUUM ANALYZE outbox")
        conn.execute("VACUUM ANALYZE delivery_attempts")
        print(
            f"seeded {rows:,} old and {young:,} young delivered rows with their attempts "
            f"in {time.perf_counter() - t0:.1f} s"
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
    server: str, template: str, args: argparse.Namespace, directory: Path, run: int
) -> dict[str, Any]:
    tokens = tokens_file(directory)
    config = write_config(directory)
    settings = RetentionSettings(batch_size=args.batch, pause=timedelta(milliseconds=args.pause_ms))
    with copy_of(server, template) as url:
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
                batches = asyncio.run(run_prune(url, settings, args.procedure))
                ended = time.time()
            finally:
                load.send_signal(signal.SIGTERM)
                out, _ = load.communicate(timeout=120)
            result = loadgen_result(out)
        check_counts(url, args.young, warm["recorded"] + result["recorded"])
    samples = [(float(at), float(lat)) for at, lat in result["samples"]]
    took = ended - started
    alone_s = min(took, args.baseline)
    return {
        "alone": window(samples, started - alone_s, started),
        "alone_s": alone_s,
        "pruning": window(samples, started, ended),
        "prune_s": took,
        "batches": batches,
        "errors": result["errors"],
        "non_200": sum(n for code, n in result["statuses"].items() if code != "200"),
        "load_avg": load_avg,
    }


def record(samples: Samples, measured: dict[str, Any], rows: int) -> str:
    for name, win in (("alone", samples.alone), ("pruning", samples.pruning)):
        latencies = measured[name]
        win.p50.append(percentile(latencies, 0.50) * 1000)
        win.p99.append(percentile(latencies, 0.99) * 1000)
        win.max.append(max(latencies, default=0.0) * 1000)
        win.seconds.append(measured["alone_s"] if name == "alone" else measured["prune_s"])
    samples.ratio.append(samples.pruning.p99[-1] / samples.alone.p99[-1])
    samples.prune_s.append(measured["prune_s"])
    samples.rows_per_s.append(rows / measured["prune_s"])
    if measured["batches"]:  # the procedure does not say
        samples.batches.append(measured["batches"])
    return (
        f"p99 {samples.alone.p99[-1]:.1f} ms alone ({measured['alone_s']:.0f} s), "
        f"{samples.pruning.p99[-1]:.1f} ms while pruning: {samples.ratio[-1]:.2f}x; prune "
        f"{measured['prune_s']:.1f} s ({samples.rows_per_s[-1]:,.0f} rows/s); errors "
        f"{measured['errors']}, non-200 {measured['non_200']}; load average "
        f"{measured['load_avg']:.2f} before the prune"
    )


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
    parser.add_argument("--batch", type=int, default=RetentionSettings().batch_size)
    parser.add_argument(
        "--pause-ms",
        type=float,
        default=RetentionSettings().pause.total_seconds() * 1000,
        help="retention.pause",
    )
    parser.add_argument("--procedure", action="store_true", help="CALL prune_retention()")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--quick", action="store_true", help="1 run, 100,000 rows: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rows, args.young, args.baseline = 1, 100_000, 10_000, 5.0

    server = server_url()
    template = seed_template(server, args.rows, args.young)
    samples = Samples()
    try:
        with tempdir() as tmp:
            for run in range(args.runs):
                measured = one_run(server, template, args, Path(tmp), run)
                print(f"run {run + 1}/{args.runs}: " + record(samples, measured, args.rows))
    finally:
        drop_database(server, template)

    def row(win: Window) -> list[Figure]:
        return [
            Figure("p50", "ms", win.p50),
            Figure("p99", "ms", win.p99),
            Figure("max", "ms", win.max),
            Figure("window", "s", win.seconds),
        ]

    driver = "CALL prune_retention" if args.procedure else "prune()"
    print_table(
        f"POST /v1/seen at {args.rate:,.0f} req/s, {args.workers} API workers; median of "
        f"{args.runs} (min-max)",
        [("intake alone", row(samples.alone)), ("intake while pruning", row(samples.pruning))],
    )
    print_table(
        f"{driver} of {args.rows:,} rows and their attempts, batch {args.batch}, pause "
        f"{args.pause_ms:g} ms",
        [
            (
                "prune",
                [
                    Figure("p99 ratio", "x", samples.ratio),
                    Figure("duration", "s", samples.prune_s),
                    Figure("outbox rows/s", "rows/s", samples.rows_per_s),
                    Figure("batches", "n", samples.batches),
                ],
            )
        ],
    )
    verdict = "met" if median(samples.ratio) <= 2.0 else "NOT met"
    print(f"target: p99 while pruning <= 2x the p99 alone: {verdict}")


if __name__ == "__main__":
    main()
