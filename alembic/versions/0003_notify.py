"""Notifications: users, API keys, event types, events, notifications, the fan-out.

Revision ID: 0003_notify
Revises: 0002_core
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "0003_notify"
down_revision = "0002_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("0003_notify.up.sql")


def downgrade() -> None:
    execute_file("0003_notify.down.sql")
