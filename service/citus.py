"""The cluster mode (`[database] mode = "citus"`): the tables placed on a Citus cluster.

Where each table goes is one query, `citus_unplaced` (sql/core/queries/citus.sql):
distributed on `bucket` and co-located, reference tables, or left on the coordinator.
`distribute` places what is not placed yet, so it runs after every upgrade; the service
itself runs the same SQL in both modes (docs/scaling.md).
"""

from __future__ import annotations

import psycopg

from service.sql import q


class CitusMissing(RuntimeError):
    """mode = "citus" on a database without the citus extension."""


def distribute(url: str) -> list[tuple[str, str]]:
    """Place every table of `citus_placements` not placed yet; returns (table, placement)
    of those placed now."""
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute(q("citus_installed")).fetchone() is None:
            raise CitusMissing(
                '[database] mode = "citus" but the database has no citus extension: '
                "CREATE EXTENSION citus on the coordinator and add the workers first"
            )
        conn.execute(q("citus_settings"))
        placed = []
        for table, placement in conn.execute(q("citus_unplaced")).fetchall():
            # One table per statement: each moves its rows to the workers and commits.
            query = "citus_reference" if placement == "reference" else "citus_distribute"
            conn.execute(q(query), {"table": table})
            placed.append((str(table), str(placement)))
        conn.execute(q("citus_analyze"))
        return placed
