"""Preference precedence in one function, notify_preference_on(): the fan-out's
notify_suppression() and the effective preferences shown (notify_effective_preferences()).

Revision ID: 0008_preference_rule
Revises: 0007_tracing
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "0008_preference_rule"
down_revision = "0007_tracing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("0008_preference_rule.up.sql")


def downgrade() -> None:
    execute_file("0008_preference_rule.down.sql")
