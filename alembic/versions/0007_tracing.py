"""The W3C traceparent stored with each outbox row.

Revision ID: 0007_tracing
Revises: 0006_analytics
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "0007_tracing"
down_revision = "0006_analytics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("0007_tracing.up.sql")


def downgrade() -> None:
    execute_file("0007_tracing.down.sql")
