"""Stable views for analysts: deliveries, seen marks, the notification funnel, opt-outs.

Revision ID: 0006_analytics
Revises: 0005_admin
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "0006_analytics"
down_revision = "0005_admin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("0006_analytics.up.sql")


def downgrade() -> None:
    execute_file("0006_analytics.down.sql")
