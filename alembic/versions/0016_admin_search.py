"""The admin's user search: indexes on users for an id prefix and a case-insensitive email.

Revision ID: 0016_admin_search
Revises: 0014_inbox_stream
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "0016_admin_search"
down_revision = "0014_inbox_stream"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("0016_admin_search.up.sql")


def downgrade() -> None:
    execute_file("0016_admin_search.down.sql")
