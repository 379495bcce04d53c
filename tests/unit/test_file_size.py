"""A file stays short enough to read whole: at most LIMIT lines of Python or SQL.

Migrations' frozen copies (sql/migrations/) are what ran, whatever their size.
"""

from __future__ import annotations

from pathlib import Path

from service.config.base import ROOT

LIMIT = 600
FOLDERS = ("service", "dispatcher", "sql", "tests", "bench", "alembic")
# Longer files still to split, each with why it is long; the list only shrinks.
OVER: dict[str, str] = {
    "bench/chaos.py": "every fault of the faults-under-load table in one driver",
    "tests/integration/test_seen_api.py": "every answer of POST /v1/seen, one test each",
}


def _files() -> list[Path]:
    return sorted(
        p
        for folder in FOLDERS
        for pattern in ("*.py", "*.sql")
        for p in (ROOT / folder).rglob(pattern)
        if "migrations" not in p.relative_to(ROOT).parts and "__pycache__" not in p.parts
    )


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_file_is_longer_than_the_limit() -> None:
    long = [
        f"{p.relative_to(ROOT).as_posix()}: {_lines(p)} lines"
        for p in _files()
        if _lines(p) > LIMIT and p.relative_to(ROOT).as_posix() not in OVER
    ]
    assert not long, f"over {LIMIT} lines (split it):\n" + "\n".join(long)


def test_the_exceptions_are_still_needed() -> None:
    """A file split under the limit is taken off OVER, so it cannot grow back unnoticed."""
    short = [name for name in OVER if _lines(ROOT / name) <= LIMIT]
    assert not short, f"no longer over {LIMIT} lines: take them off OVER: {short}"
