"""The live inbox's change log (inbox_changes), read by GET /v1/inbox/stream, and its
pruning (prune_inbox_changes; prune_retention takes its age).

Revision ID: 0014_inbox_stream
Revises: 0013_web_push
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "0014_inbox_stream"
down_revision = "0013_web_push"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("0014_inbox_stream.up.sql")


def downgrade() -> None:
    execute_file("0014_inbox_stream.down.sql")
