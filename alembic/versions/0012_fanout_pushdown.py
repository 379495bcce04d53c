"""The fan-out on the Citus workers: ids taken in blocks (block_id(), take_blocks(): the
id sequences of outbox, notifications and digest_items step by 65,536), a `buckets`
table to run a statement over the users on every shard, the audience's rule as one
query text (notify_audience_sql()) and the chunk's writes as statements Citus pushes
down.

Revision ID: 0012_fanout_pushdown
Revises: 0011_user_bucket
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "0012_fanout_pushdown"
down_revision = "0011_user_bucket"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("0012_fanout_pushdown.up.sql")


def downgrade() -> None:
    execute_file("0012_fanout_pushdown.down.sql")
