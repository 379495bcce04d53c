"""The benchmarks' own named queries (bench/queries.sql), loaded like the service's."""

from __future__ import annotations

from pathlib import Path
from typing import LiteralString

from service.sql import parse_queries

_QUERIES = parse_queries((Path(__file__).parent / "queries.sql").read_text(), "bench/queries.sql")


def bq(name: str) -> LiteralString:
    return _QUERIES[name].text
