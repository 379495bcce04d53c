"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

from __future__ import annotations

from service.migrate import execute_file

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("${up_revision}.up.sql")


def downgrade() -> None:
    execute_file("${up_revision}.down.sql")
