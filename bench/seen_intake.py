"""POST /v1/seen throughput and latency: group commit against the naive baseline and
against the HTTP stack's ceiling.

The three variants run under the same uvicorn (same protocol class, same workers) and
take the same load (same bodies and Authorization header):
- naive: the API with one transaction per request, per mark its own INSERTs and its own
  Procrastinate job (bench/naive.py);
- group commit: the API as it ships: concurrent requests share one transaction and one
  set-based statement, with one wake-up job per consumer (service/seen/store.py);
- ceiling: a bare ASGI app that reads the body and answers 200, with no database
  (bench/ceiling.py): what this machine's HTTP layer carries at all, so the intake's
  rate over it is a yardstick that travels with the run.
Each run gets a fresh database; at the end of a run the rows are counted: every 200
"recorded" must be exactly one mark and one outbox row. Runs rotate the variants' order.

    .venv/bin/python -m bench.seen_intake [--runs 3] [--duration 60] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    BOUNDED_HTTP,
    Figure,
    Service,
    counts,
    loadgen,
    print_table,
    run_api,
    scratch_database,
    server_url,
    tempdir,
    tokens_file,
    write_config,
)

VARIANTS = {
    "naive": "bench.naive:app",
    "group commit": "service.asgi:app",
    "ceiling": "bench.ceiling:app",
}
# Variants that write nothing: no database of their own, nothing to count.
NO_DATABASE = {"ceiling"}


@dataclass
class Samples:
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    steady_p50: list[float] = field(default_factory=list)
    steady_p99: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    gen_cpu: list[float] = field(default_factory=list)


class PeakRss:
    """Samples a service's resident memory in the background; keeps the peak."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self.service.rss_mb())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.service.rss_mb())


def check_counts(db: str, variant: str, recorded: int) -> None:
    c = counts(db)
    if c["marks"] != recorded or c["outbox"] != recorded:
        raise SystemExit(
            f"{variant}: {recorded} recorded but {c} in the database: lost or duplicated"
        )
    if variant == "naive" and c["jobs"] != recorded:
        raise SystemExit(f"naive: expected one job per mark, found {c['jobs']} for {recorded}")
    if variant != "naive" and c["jobs"] > 1:
        raise SystemExit(f"{variant}: expected at most one pending wake-up, found {c['jobs']}")


def run_order(names: list[str], run: int) -> list[str]:
    """The variants of one run, rotated by one each run: none always goes first, on a
    machine where the first of a series was measured faster."""
    shift = run % len(names)
    return names[shift:] + names[:shift]


def share(a: list[float], b: list[float]) -> str:
    """median(a) / median(b), with the pair-by-pair range when there are several runs."""
    line = f"{statistics.median(a) / statistics.median(b):.2f}"
    pairs = [x / y for x, y in zip(a, b, strict=True) if y]
    if len(pairs) > 1:
        line += f" (per run {min(pairs):.2f}-{max(pairs):.2f})"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of full load per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--steady-rate", type=float, default=1000.0)
    parser.add_argument("--steady-duration", type=float, default=10.0)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated subset of: " + ", ".join(VARIANTS),
    )
    parser.add_argument(
        "--http",
        default=BOUNDED_HTTP,
        help="uvicorn's --http for every variant (default: %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="1 run of 3 s: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.duration, args.steady_duration = 1, 3.0, 3.0
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")

    server = server_url()
    samples = {name: Samples() for name in names}
    with tempdir() as tmp:
        directory = Path(tmp)
        tokens = tokens_file(directory)
        config = write_config(directory)
        for run in range(args.runs):
            for name in run_order(names, run):
                recorded = 0
                database = (
                    contextlib.nullcontext(server)
                    if name in NO_DATABASE
                    else scratch_database(server, "intake")
                )
                with (
                    database as db,
                    run_api(
                        config, db, app=VARIANTS[name], workers=args.workers, http=args.http
                    ) as api,
                ):
                    warm = loadgen(
                        api.url, tokens, connections=args.connections, duration=1, prefix=f"w{run}"
                    )
                    with PeakRss(api) as rss:
                        # Steady-rate latency first: measured after the flood it would be
                        # the latency of recovering from overload (autovacuum and a
                        # checkpoint over the rows the flood just wrote).
                        steady = loadgen(
                            api.url,
                            tokens,
                            connections=args.connections,
                            duration=args.steady_duration,
                            rate=args.steady_rate,
                            prefix=f"s{run}",
                        )
                        full: dict[str, Any] = loadgen(
                            api.url,
                            tokens,
                            connections=args.connections,
                            duration=args.duration,
                            prefix=f"f{run}",
                        )
                    recorded = warm["recorded"] + full["recorded"] + steady["recorded"]
                    if name in NO_DATABASE:
                        checked = "no database"
                    else:
                        check_counts(db, name, recorded)
                        checked = f"counts ok ({recorded} marks)"
                s = samples[name]
                s.rps.append(full["rps"])
                s.p50.append(full["p50_ms"])
                s.p99.append(full["p99_ms"])
                s.steady_p50.append(steady["p50_ms"])
                s.steady_p99.append(steady["p99_ms"])
                s.rss.append(rss.peak)
                s.gen_cpu.append(100 * full["cpu_s"] / full["elapsed_s"])
                print(
                    f"run {run + 1}/{args.runs} {name:>12}: {full['rps']:,.0f} req/s, "
                    f"p99 {full['p99_ms']:.1f} ms; at {args.steady_rate:.0f}/s p99 "
                    f"{steady['p99_ms']:.1f} ms; non-200: "
                    f"{ {k: v for k, v in full['statuses'].items() if k != '200'} }; "
                    f"{checked}",
                    flush=True,
                )
    rows = [
        (
            name,
            [
                Figure("req/s", f"{args.connections} conns", s.rps),
                Figure("p50", "ms", s.p50),
                Figure("p99", "ms", s.p99),
                Figure(f"p50 @{args.steady_rate:.0f}/s", "ms", s.steady_p50),
                Figure(f"p99 @{args.steady_rate:.0f}/s", "ms", s.steady_p99),
                Figure("API RSS", "MB", s.rss),
                Figure("loadgen CPU", "% core", s.gen_cpu),
            ],
        )
        for name, s in samples.items()
    ]
    print_table(
        f"POST /v1/seen, {args.workers} uvicorn workers, {args.duration:.0f} s per run, "
        f"median (min-max) of {args.runs}",
        rows,
    )
    rps = {name: s.rps for name, s in samples.items()}
    if "group commit" in rps and "naive" in rps:
        ratio = statistics.median(rps["group commit"]) / statistics.median(rps["naive"])
        print(f"group commit / naive throughput: {ratio:.1f}x")
    if "ceiling" in rps:
        for name in ("group commit", "naive"):
            if name in rps:
                print(f"{name} / ceiling: {share(rps[name], rps['ceiling'])}")


if __name__ == "__main__":
    main()
