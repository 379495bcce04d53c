"""The README's Layout table names every Alembic revision there is, in order."""

from __future__ import annotations

import re

from service.config.base import ROOT


def test_the_readme_lists_every_migration() -> None:
    row = next(
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("| `alembic/` |")
    )
    listed = re.findall(r"\b(\d{4}) ", row)
    revisions = sorted(p.name[:4] for p in (ROOT / "alembic" / "versions").glob("[0-9]*_*.py"))
    assert listed == revisions, f"README.md's alembic/ row: {row}"
