"""A user's rows in the bucket of the user's own seen marks (user_bucket()), so that on
Citus a user's notifications, deliveries and marks share a shard (rows moved); what
Citus refuses in the notification functions rewritten (PL/pgSQL for SQL functions that
read tables, no function but an immutable one in ON CONFLICT's SET).

Revision ID: 0011_user_bucket
Revises: 0010_citus
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "0011_user_bucket"
down_revision = "0010_citus"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("0011_user_bucket.up.sql")


def downgrade() -> None:
    execute_file("0011_user_bucket.down.sql")
