"""Seen mark → consumer latency: from the API's 200 to the webhook's arrival at the
consumer, at a steady rate, with the real API, dispatcher and consumer processes.

    .venv/bin/python -m bench.end_to_end [--rate 1000] [--duration 20] [--runs 3] [--quick]

Every run ends with accounting: each 200 "recorded" arrived at the consumer exactly once
(the dispatcher is at-least-once, so a duplicate would show and is reported).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    PYTHON,
    WEBHOOK_SECRET,
    Figure,
    counts,
    loadgen,
    print_table,
    run_api,
    run_process,
    scratch_database,
    server_url,
    tempdir,
    tokens_file,
    wait_http,
    write_config,
)
from bench.loadgen import percentile
from tests.support import free_port

WARMUP_S = 2.0
DRAIN_LIMIT_S = 180.0


def sink_config(port: int) -> str:
    return f"""
[consumers.promotions]
transport = "http"
url = "http://127.0.0.1:{port}/seen"
secret = "{WEBHOOK_SECRET}"
timeout = "PT5S"
concurrency = 32
backoff = {{ initial = "PT0.2S", factor = 2.0, cap = "PT2S" }}
"""


@dataclass(frozen=True)
class Variant:
    app: str  # the API's writer
    delivery: list[str]  # the delivering process
    duration_s: Callable[[argparse.Namespace], float]


VARIANTS = {
    "outbox + dispatcher": Variant(
        "service.asgi:app", ["-m", "dispatcher.main"], lambda a: float(a.duration)
    ),
    # One Procrastinate job per mark, each delivering its row. It cannot keep up with
    # 1,000/s, so it runs shorter (its backlog must drain before the run is counted).
    "naive: job per mark": Variant(
        "bench.naive:app", ["-m", "bench.naive_worker"], lambda a: float(a.naive_duration)
    ),
}


def one_run(
    server: str, directory: Path, args: argparse.Namespace, run: int, variant: Variant
) -> dict[str, float]:
    sink_port = free_port()
    receipts_file = directory / f"arrivals-{run}-{uuid.uuid4().hex[:6]}.json"
    config = write_config(directory, sink_config(sink_port))
    tokens = tokens_file(directory)
    with scratch_database(server, "e2e") as db:
        return _measure(db, config, tokens, sink_port, receipts_file, args, run, variant)


def _measure(
    db: str,
    config: Path,
    tokens: Path,
    sink_port: int,
    receipts_file: Path,
    args: argparse.Namespace,
    run: int,
    variant: Variant,
) -> dict[str, float]:
    env = {"DATABASE_URL": db, "MARK_NOTIFY_CONFIG": str(config)}
    with run_process(
        [PYTHON, "-m", "bench.sink", "--port", str(sink_port), "--out", str(receipts_file)], {}
    ) as sink:
        wait_http(f"http://127.0.0.1:{sink_port}/count", sink.process)
        with (
            run_api(config, db, app=variant.app, workers=args.workers) as api,
            run_process([PYTHON, *variant.delivery], env) as dispatcher,
        ):
            # Warm-up at the same rate, not measured (like the intake bench): the first
            # second pays for new connections and first statement plans everywhere.
            warm = loadgen(
                api.url,
                tokens,
                connections=64,
                duration=WARMUP_S,
                rate=args.rate,
                prefix=f"w{run}",
            )
            load = loadgen(
                api.url,
                tokens,
                connections=64,
                duration=variant.duration_s(args),
                rate=args.rate,
                prefix=f"e{run}",
                keep_receipts=True,
            )
            recorded = load["recorded"] + warm["recorded"]
            deadline = time.monotonic() + DRAIN_LIMIT_S
            while time.monotonic() < deadline:
                if counts(db)["delivered"] >= recorded:
                    break
                time.sleep(0.2)
            dispatcher_rss = dispatcher.rss_mb()
            api_rss = api.rss_mb()
    arrivals: dict[str, list[float]] = json.loads(receipts_file.read_text())
    answered = {item: at for item, at in load["receipts"]}
    missing = [i for i in answered if i not in arrivals]
    if len(arrivals) != recorded:
        raise SystemExit(f"{recorded} marks recorded but {len(arrivals)} reached the consumer")
    duplicates = sum(len(v) - 1 for v in arrivals.values())
    lat = [arrivals[i][0] - at for i, at in answered.items() if i in arrivals]
    print(
        f"run {run + 1}: {len(answered)} measured marks at {args.rate:.0f}/s (after "
        f"{WARMUP_S:.0f} s of warm-up); delivered {len(lat)}, "
        f"missing {len(missing)}, duplicates {duplicates}; "
        f"p50 {percentile(lat, 0.5) * 1000:.1f} ms "
        f"p99 {percentile(lat, 0.99) * 1000:.1f} ms; RSS api {api_rss:.0f} MB, "
        f"dispatcher {dispatcher_rss:.0f} MB",
        flush=True,
    )
    if missing:
        raise SystemExit(f"{len(missing)} marks answered 200 never reached the consumer")
    return {
        "p50": percentile(lat, 0.5) * 1000,
        "p99": percentile(lat, 0.99) * 1000,
        "max": max(lat, default=0) * 1000,
        "dups": float(duplicates),
        "api_rss": api_rss,
        "dispatcher_rss": dispatcher_rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--naive-duration", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.duration, args.naive_duration = 1, 3.0, 2.0
    server = server_url()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempdir() as tmp:
        for run in range(args.runs):
            for name, variant in VARIANTS.items():
                print(f"{name}:", end=" ", flush=True)
                results[name].append(one_run(server, Path(tmp), args, run, variant))
    keys = [
        ("p50", "ms"),
        ("p99", "ms"),
        ("max", "ms"),
        ("dups", "rows"),
        ("api_rss", "MB"),
        ("dispatcher_rss", "MB"),
    ]
    print_table(
        f"seen → HTTP consumer at {args.rate:.0f} marks/s, {args.duration:.0f} s per run "
        f"(naive {args.naive_duration:.0f} s), median (min-max) of {args.runs}",
        [
            (name, [Figure(k, u, [r[k] for r in rows]) for k, u in keys])
            for name, rows in results.items()
        ],
    )


if __name__ == "__main__":
    main()
