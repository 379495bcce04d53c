"""The HTTP stack's ceiling for POST /v1/seen: a bare ASGI app with no database.

`bench.seen_intake` runs it as a third variant under the same uvicorn, protocol class,
workers, load generator, bodies and Authorization header as the real intake. It reads
the whole body and answers 200 with a small JSON, so its rate is what this machine's
HTTP layer can carry at all, and the intake's rate over it is the share the service's
own work leaves.

    .venv/bin/python -m uvicorn bench.ceiling:app --workers 2
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

# About the size of the intake's own answer, with the same headers but x-request-id.
_ANSWER = b'{"tag":"promotions","id":"-","status":"ceiling"}'
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_ANSWER)).encode()),
]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    # The body is read to its end, as the intake does (the harness's /readyz has none).
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _ANSWER})
