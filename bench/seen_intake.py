"""POST /v1/seen throughput and latency: group commit against the naive baseline.

Both variants run the same API process (uvicorn, same workers, same validation and
identity); only the writer differs:
- naive: one transaction per request, per mark its own INSERTs and its own Procrastinate
  job (bench/naive.py);
- group commit: concurrent requests share one transaction and one set-based statement,
  with one wake-up job per consumer (service/seen/store.py).
Each run gets a fresh database; at the end of a run the rows are counted: every 200
"recorded" must be exactly one mark and one outbox row.

    .venv/bin/python -m bench.seen_intake [--runs 3] [--duration 60] [--quick]
"""

from __future__ import annotations

import argparse
import threading
from dataclasses import dataclass, field
from typing import Any

from bench.harness import (
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

VARIANTS = {"naive": "bench.naive:app", "group commit": "service.asgi:app"}


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
    parser.add_argument("--quick", action="store_true", help="1 run of 3 s: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.duration, args.steady_duration = 1, 3.0, 3.0

    server = server_url()
    samples = {name: Samples() for name in VARIANTS}
    with tempdir() as tmp:
        from pathlib import Path

        directory = Path(tmp)
        tokens = tokens_file(directory)
        config = write_config(directory)
        for run in range(args.runs):
            for name, app in VARIANTS.items():
                recorded = 0
                with (
                    scratch_database(server, "intake") as db,
                    run_api(config, db, app=app, workers=args.workers) as api,
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
                    check_counts(db, name, recorded)
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
                    f"counts ok ({recorded} marks)",
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
    import statistics

    ratio = statistics.median(samples["group commit"].rps) / statistics.median(samples["naive"].rps)
    print(f"group commit / naive throughput: {ratio:.1f}x")


if __name__ == "__main__":
    main()
