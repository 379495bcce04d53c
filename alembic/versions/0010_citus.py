"""The same SQL on one PostgreSQL and on a Citus cluster: functions rewritten where Citus
refuses what PostgreSQL allows (SQL functions' parameters, non-immutable functions in
ON CONFLICT's SET). The cluster mode's placement itself is not a revision: service.migrate
runs it after upgrading (service/citus.py).

Revision ID: 0010_citus
Revises: 0009_shard_key
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "0010_citus"
down_revision = "0009_shard_key"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("0010_citus.up.sql")


def downgrade() -> None:
    execute_file("0010_citus.down.sql")
