"""The Layout table of docs/architecture.md names every Alembic revision there is, in order."""

from __future__ import annotations

import re

from service.config.base import ROOT


def test_the_layout_lists_every_migration() -> None:
    row = next(
        line
        for line in (ROOT / "docs" / "architecture.md").read_text().splitlines()
        if line.startswith("| `alembic/` |")
    )
    listed = re.findall(r"\b(\d{4}) ", row)
    revisions = sorted(p.name[:4] for p in (ROOT / "alembic" / "versions").glob("[0-9]*_*.py"))
    assert listed == revisions, f"docs/architecture.md's alembic/ row: {row}"
