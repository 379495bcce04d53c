"""Alembic environment: online migrations only, one transaction per run."""

from __future__ import annotations

from sqlalchemy import create_engine, pool

from alembic import context

url = context.config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("no database URL: run migrations through service.migrate")

engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
