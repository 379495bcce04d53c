"""Where a schedule's event data comes from, at each run.

- static: the `data` written in the schedule.
- sql: a query in our database, in a transaction of its own that is `READ ONLY` (a query
  that writes is refused by PostgreSQL) with a `statement_timeout`. Shape "rows" makes
  `{"rows": [{column: value, ...}, ...]}` (at most [scheduler].max_rows); shape "row" makes
  the columns of its only row the data (no row, or several, fails the run). Values go to
  JSON as psycopg reads them: numbers, text, booleans, JSON; timestamps and dates as ISO
  text, numerics as text, uuids as text.
- http: a GET of the URL with [scheduler].source_timeout; a 2xx whose body is a JSON
  object is the data.

A failure is `SourceError`; `transient` ones (a timeout, a refused connection, an HTTP 5xx
or 429, a statement cancelled by its timeout) are retried by the run with backoff, others
(a query that writes or does not parse, an HTTP 4xx, data of the wrong shape) fail it at
once. The data of every kind is bounded by [notify].max_data_bytes, as the API's events are.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import httpx
import msgspec
import psycopg

from service.config.load import Config
from service.config.schedule import HttpSource, Source, SqlSource, StaticSource
from service.sql import q

Connect = Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]]


class SourceError(Exception):
    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


async def fetch(source: Source, config: Config, connect: Connect) -> dict[str, Any]:
    """The event data `source` gives now; SourceError if it cannot."""
    if isinstance(source, StaticSource):
        data = dict(source.data)
    elif isinstance(source, SqlSource):
        data = await _query(source, config, connect)
    else:
        data = await _get(source, config)
    size = len(msgspec.json.encode(data))
    if size > config.notify.max_data_bytes:
        raise SourceError(
            f"the data is {size} bytes, over [notify].max_data_bytes "
            f"({config.notify.max_data_bytes})",
            transient=False,
        )
    return data


async def _query(source: SqlSource, config: Config, connect: Connect) -> dict[str, Any]:
    timeout_ms = int(config.scheduler.source_timeout.total_seconds() * 1000)
    limit = config.scheduler.max_rows if source.shape == "rows" else 1
    # The query is the schedule's own text, written by whoever may configure schedules (the
    # config file, bin/schedules): it runs as written, with the service's role, read-only.
    query = source.query
    try:
        async with connect() as conn, conn.transaction():
            await conn.execute(q("source_read_only"))
            await conn.execute(q("source_statement_timeout"), {"timeout_ms": str(timeout_ms)})
            # Prepared, so it is one statement: in psycopg's simple protocol (a query without
            # parameters) "COMMIT; DELETE ..." would end the read-only transaction and write.
            cur = await conn.execute(query, prepare=True)
            if cur.description is None:
                raise SourceError("the query returns no rows (not a SELECT?)", transient=False)
            columns = [c.name for c in cur.description]
            rows = await cur.fetchmany(limit + 1)
    except psycopg.errors.QueryCanceled as exc:
        raise SourceError(f"query timed out: {exc}", transient=True) from None
    except psycopg.OperationalError as exc:
        raise SourceError(f"database: {exc}", transient=True) from None
    except psycopg.Error as exc:
        # Writes (read_only_sql_transaction), syntax, permissions: the same next time.
        raise SourceError(f"query refused: {exc}", transient=False) from None
    records = [msgspec.to_builtins(dict(zip(columns, row, strict=True))) for row in rows]
    if source.shape == "row":
        if len(records) != 1:
            raise SourceError(
                f"shape 'row' wants exactly one row, the query gave "
                f"{'none' if not records else 'several'}",
                transient=False,
            )
        return cast(dict[str, Any], records[0])
    if len(records) > limit:
        raise SourceError(
            f"the query gave over {limit} rows ([scheduler].max_rows)", transient=False
        )
    return {"rows": records}


async def _get(source: HttpSource, config: Config) -> dict[str, Any]:
    timeout = config.scheduler.source_timeout.total_seconds()
    limit = config.notify.max_data_bytes
    try:
        async with (
            httpx.AsyncClient(timeout=timeout) as client,
            client.stream("GET", source.url, headers=source.headers) as response,
        ):
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise SourceError(
                        f"the response is over [notify].max_data_bytes ({limit})",
                        transient=False,
                    )
    except httpx.HTTPError as exc:
        raise SourceError(
            f"GET {source.url}: {type(exc).__name__}: {exc}", transient=True
        ) from None
    status = response.status_code
    if status >= 300:
        raise SourceError(
            f"GET {source.url}: HTTP {status}", transient=status >= 500 or status in (408, 429)
        )
    try:
        data = msgspec.json.decode(bytes(body))
    except msgspec.DecodeError as exc:
        raise SourceError(f"GET {source.url}: not JSON: {exc}", transient=False) from None
    if not isinstance(data, dict):
        raise SourceError(f"GET {source.url}: want a JSON object", transient=False)
    return data
