"""Web Push: the webpush channel kind and the browsers' subscriptions (webpush_subscriptions),
which the fan-out's contact rule (notify_suppression(), notify_materialize_chunk(),
flush_digests()) reads.

Revision ID: 0013_web_push
Revises: 0012_fanout_pushdown
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "0013_web_push"
down_revision = "0012_fanout_pushdown"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("0013_web_push.up.sql")


def downgrade() -> None:
    execute_file("0013_web_push.down.sql")
