"""The shard key and day partitions: a subject's bucket in every key of the tables that
grow with traffic, bucket leases for dispatchers, outbox and delivery_attempts partitioned
by day (their rows moved over), and retention by whole days.

Revision ID: 0009_shard_key
Revises: 0008_preference_rule
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "0009_shard_key"
down_revision = "0008_preference_rule"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("0009_shard_key.up.sql")


def downgrade() -> None:
    execute_file("0009_shard_key.down.sql")
