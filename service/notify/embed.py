"""`GET /embed/mark-notify-inbox.js`: the `<mark-notify-inbox>` custom element
(service/notify/static/mark-notify-inbox.js; docs/inbox.md), served as it is written.

The file is read once, at import: its ETag is a hash of its bytes, so a new release is a
new tag. Browsers keep it for an hour (`Cache-Control`), then ask again with
`If-None-Match` and get a 304 while it has not changed. It is gzipped once, for clients
that accept it. Any origin may load it (`Access-Control-Allow-Origin: *`: a public file,
no credentials), so another site's page can embed it, also as a module or with
`crossorigin`; the API calls the element makes are another matter (service/cors.py).
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.openapi import Section, error_responses

PATH = "/embed/mark-notify-inbox.js"
FILE = Path(__file__).resolve().parent / "static" / "mark-notify-inbox.js"
SCRIPT = FILE.read_bytes()
GZIPPED = gzip.compress(SCRIPT, compresslevel=9, mtime=0)
ETAG = f'"{hashlib.sha256(SCRIPT).hexdigest()[:20]}"'
MEDIA_TYPE = "text/javascript; charset=utf-8"
CACHE_CONTROL = "public, max-age=3600"


def _not_modified(if_none_match: str) -> bool:
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return ETAG in tags or "*" in tags


async def get_script(request: Request) -> Response:
    headers = {
        "ETag": ETAG,
        "Cache-Control": CACHE_CONTROL,
        "Access-Control-Allow-Origin": "*",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    if _not_modified(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    accepted = {
        e.split(";")[0].strip() for e in request.headers.get("accept-encoding", "").split(",")
    }
    if "gzip" in accepted:
        return Response(
            GZIPPED, headers=headers | {"Content-Encoding": "gzip"}, media_type=MEDIA_TYPE
        )
    return Response(SCRIPT, headers=headers, media_type=MEDIA_TYPE)


def _paths() -> dict[str, Any]:
    return {
        PATH: {
            "get": {
                "summary": "The <mark-notify-inbox> custom element (docs/inbox.md)",
                "description": (
                    "Plain JavaScript, no dependencies; load it with a script tag from any "
                    "origin. Gzipped for clients that accept it; an ETag of its content, "
                    "kept an hour."
                ),
                "security": [],
                "parameters": [
                    {
                        "name": "If-None-Match",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "The ETag of a copy the client has.",
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The script.",
                        "content": {"text/javascript": {"schema": {"type": "string"}}},
                    },
                    "304": {"description": "The client's copy is current."},
                }
                | error_responses("headers_too_large", "internal_error"),
            }
        }
    }


OPENAPI_SECTION = Section(paths=_paths, structs=())

ROUTES: list[BaseRoute] = [Route(PATH, get_script, methods=["GET"])]
