"""Procrastinate's schema (jobs, workers, events), as shipped by the installed version.

Revision ID: 0001_procrastinate
Revises:
"""

from __future__ import annotations

from service.migrate import execute_file, execute_sql, procrastinate_schema

revision = "0001_procrastinate"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql(procrastinate_schema())


def downgrade() -> None:
    execute_file("0001_procrastinate.down.sql")
