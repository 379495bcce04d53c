"""Admin panel and ops tools: accounts, sessions, audit, mailings, controls.

Revision ID: 0005_admin
Revises: 0004_schedule
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "0005_admin"
down_revision = "0004_schedule"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("0005_admin.up.sql")


def downgrade() -> None:
    execute_file("0005_admin.down.sql")
