"""A webhook consumer for benchmarks, in its own process: answers 200 at once and notes
when each event arrived (wall clock, to compare with the load generator's 200s).

    python -m bench.sink --port P --out receipts.json
Writes {"<id>": [arrival, ...]} on SIGTERM; more than one arrival for an id is a
duplicate delivery.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class _Event(msgspec.Struct):
    id: str


def make_app(out: Path) -> Starlette:
    arrivals: dict[str, list[float]] = {}
    decode = msgspec.json.Decoder(_Event).decode

    async def receive(request: Request) -> Response:
        event = decode(await request.body())
        arrivals.setdefault(event.id, []).append(time.time())
        return Response(status_code=204)

    async def count(request: Request) -> Response:
        return Response(str(sum(len(v) for v in arrivals.values())))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        out.write_text(json.dumps(arrivals))  # noqa: ASYNC240 (once, at shutdown)

    return Starlette(
        routes=[Route("/seen", receive, methods=["POST"]), Route("/count", count)],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.out), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
