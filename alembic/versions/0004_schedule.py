"""Scheduled work: digests, periodic events, retention.

Revision ID: 0004_schedule
Revises: 0003_notify
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "0004_schedule"
down_revision = "0003_notify"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("0004_schedule.up.sql")


def downgrade() -> None:
    execute_file("0004_schedule.down.sql")
