"""Core schema: seen marks, outbox, delivery attempts.

Revision ID: 0002_core
Revises: 0001_procrastinate
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "0002_core"
down_revision = "0001_procrastinate"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("0002_core.up.sql")


def downgrade() -> None:
    execute_file("0002_core.down.sql")
