"""What the API answers 503 rather than 500: a database, or a Citus worker, out of reach."""

from __future__ import annotations

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from service.database import database_unreachable


@pytest.mark.parametrize(
    "exc",
    [
        PoolTimeout("couldn't get a connection after 5.00 sec"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        # As Citus relays a worker that is down or shutting down (internal_error, XX000).
        psycopg.errors.InternalError_("connection to the remote node 127.0.0.1:25432 failed"),
        psycopg.errors.InternalError_("terminating connection due to administrator command"),
    ],
)
def test_a_lost_database_or_worker_is_unreachable(exc: BaseException) -> None:
    assert database_unreachable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.errors.InternalError_("could not find shard placement"),
        psycopg.errors.UniqueViolation("duplicate key value"),
        ValueError("not a database error"),
    ],
)
def test_anything_else_is_not(exc: BaseException) -> None:
    assert not database_unreachable(exc)
