"""One benchmark, several source trees, in the same run: before and after a change.

Each tree is NAME=DIR, DIR a checkout (e.g. a `git worktree` of an older commit). Every
round runs `python -m MODULE ARGS` once in each tree (cwd=DIR, so that tree's bench,
service and migrations are what runs), the order reversed every other round (A B, B A,
...), all against the same PostgreSQL: DATABASE_URL, else the embedded one in
.data/pg-bench, started here and handed to every run. Each run's printed tables (rich,
bench.harness.print_table) and its `A / B: ratio` lines are parsed; a cell's median is
that run's value. Printed: each figure's median (min-max) over the rounds per tree, and
each tree's median over the first tree's, with the range of the round-by-round ratios.

    git worktree add /tmp/mn-before ed04e4c
    .venv/bin/python -m bench.trees --rounds 3 before=/tmp/mn-before after=. -- \\
        bench.dispatch --runs 1 --baseline-rows 200
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import PYTHON, server_url

# A rich table's header lines (┃), body lines (│), its end (└).
HEAD, BODY, END = "┃", "│", "└"
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
# e.g. "group commit / ceiling: 0.19 (per run 0.16-0.27)" from bench.seen_intake.
RATIO_LINE = re.compile(r"^(?P<name>[^:│┃]+ / [^:│┃]+): (?P<value>-?\d[\d,]*(?:\.\d+)?)x?(?:\s|$)")


@dataclass
class Tree:
    name: str
    path: Path
    # Figure -> one value per round.
    values: dict[str, list[float]] = field(default_factory=dict)


def parse_tree(spec: str) -> Tree:
    name, _, directory = spec.partition("=")
    path = Path(directory).resolve()
    if not name or not (path / "bench").is_dir():
        raise SystemExit(f"expected NAME=DIR with DIR a checkout, got {spec!r}")
    return Tree(name, path)


def _cells(line: str, sep: str) -> list[str]:
    return [c.strip() for c in line.strip().strip(sep).split(sep)]


def _merge(into: list[str], more: list[str]) -> list[str]:
    """A cell wrapped over several lines, joined back."""
    if not into:
        return more
    return [" ".join(p for p in pair if p) for pair in zip(into, more, strict=False)]


def number(cell: str) -> float | None:
    """The median of a Figure cell: `4,011.1 (3,474.3-4,300.0)` or `4,011.1`; `-`: none."""
    match = NUMBER.match(cell)
    return float(match.group().replace(",", "")) if match else None


def parse_figures(text: str) -> dict[str, float]:
    """Every `variant: column` cell of the printed tables, and the `A / B: x` lines."""
    figures: dict[str, float] = {}
    header: list[str] = []
    rows: list[list[str]] = []

    def put(name: str, value: float) -> None:
        key, n = name, 1
        while key in figures:  # the same variant and column in a second table
            n += 1
            key = f"{name} ({n})"
        figures[key] = value

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(HEAD):
            header = _merge(header, _cells(stripped, HEAD))
        elif stripped.startswith(BODY):
            cells = _cells(stripped, BODY)
            if cells[0] or not rows:
                rows.append(cells)
            else:  # the row's cells wrapped onto this line
                rows[-1] = _merge(rows[-1], cells)
        elif stripped.startswith(END):
            for row in rows:
                for column, cell in zip(header[1:], row[1:], strict=False):
                    value = number(cell)
                    if value is not None:
                        put(f"{row[0]}: {column}", value)
            header, rows = [], []
        elif match := RATIO_LINE.match(stripped):
            put(match["name"].strip(), float(match["value"].replace(",", "")))
    return figures


def check_imports(tree: Tree) -> None:
    """The run must import the tree's own code, not the editable install's (/work/main)."""
    code = "import bench, service; print(service.__file__); print(bench.__file__)"
    out = subprocess.run(
        [PYTHON, "-c", code], cwd=tree.path, check=True, capture_output=True, text=True
    ).stdout
    for path in out.split():
        if not Path(path).resolve().is_relative_to(tree.path):
            raise SystemExit(f"{tree.name}: imports {path}, not the code of {tree.path}")


def run_once(tree: Tree, argv: list[str], env: dict[str, str], label: str) -> dict[str, float]:
    """One run of the benchmark in the tree, its output echoed line by line; its figures."""
    process = subprocess.Popen(
        [PYTHON, "-m", *argv],
        cwd=tree.path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        print(f"[{label}] {line}", end="", flush=True)
    if process.wait() != 0:
        raise SystemExit(f"{label}: exited with {process.returncode}")
    figures = parse_figures("".join(lines))
    if not figures:
        raise SystemExit(f"{label}: no figures found in its output")
    return figures


def fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def report(trees: list[Tree], rounds: int) -> None:
    first = trees[0]
    names = [name for name in first.values if all(name in t.values for t in trees)]
    width = max(len(n) for n in names) + 2
    header = f"{'figure':<{width}}" + "".join(f"{t.name:<28}" for t in trees)
    header += "".join(f"{t.name} / {first.name} (per round)" for t in trees[1:])
    print(f"\nmedian (min-max) of {rounds} rounds; ratios: of the medians (round by round)")
    print(header)
    for name in names:
        line = f"{name:<{width}}" + "".join(f"{spread(t.values[name]):<28}" for t in trees)
        base = first.values[name]
        for t in trees[1:]:
            mid = statistics.median(base)
            if not mid:
                line += "-"
                continue
            ratio = statistics.median(t.values[name]) / mid
            line += f"{ratio:.3f}"
            if len(t.values[name]) == len(base):  # else a round lacked it: no pairs
                pairs = [a / b for a, b in zip(t.values[name], base, strict=True) if b]
                line += f" ({min(pairs):.3f}-{max(pairs):.3f})"
            line += "   "
        print(line.rstrip())


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        raise SystemExit(__doc__)
    split = argv.index("--")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("trees", nargs="+", metavar="NAME=DIR")
    args = parser.parse_args(argv[:split])
    bench = argv[split + 1 :]
    if not bench:
        raise SystemExit("expected a benchmark module after --, e.g. bench.fanout --runs 1")
    trees = [parse_tree(spec) for spec in args.trees]
    for tree in trees:
        check_imports(tree)
    # One server for every tree: the runs then differ only by the code.
    env = os.environ | {"DATABASE_URL": server_url()}
    started = time.monotonic()
    print(f"{' '.join(bench)}: {args.rounds} rounds of " + ", ".join(t.name for t in trees))
    for n in range(args.rounds):
        order = trees if n % 2 == 0 else trees[::-1]
        for tree in order:
            load = Path("/proc/loadavg").read_text().split()[0]
            t0 = time.monotonic()
            figures = run_once(tree, bench, env, f"{tree.name} r{n + 1}")
            for name, value in figures.items():
                tree.values.setdefault(name, []).append(value)
            took = time.monotonic() - t0
            print(f"round {n + 1} {tree.name}: {took:.0f} s, load average {load} before it")
    report(trees, args.rounds)
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
