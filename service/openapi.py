"""OpenAPI documents generated from the msgspec Structs, never written by hand.

The core paths (health, readiness) are here, with the pieces every capability describes
its own operations with (`operation`, `answer`, `path_param`, `error_responses`). Each
capability hands its part over as a `Section` (service/seen/seen_openapi.py,
service/notify/notify_openapi.py), and service/app.py puts the document together from the
sections it mounts. What a deployment's config decides (e.g. the names of its categories
and channels) is filled in per config by `configured_document`: the document a service
serves describes the requests it accepts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import msgspec

from service.errors import ERROR_CODES
from service.wire import ErrorBody, Health, Index, Readiness

if TYPE_CHECKING:
    from service.config.load import Config

REF = "#/components/schemas/{name}"
SERVICE_AUTH = (
    "invalid_api_key",
    "service_key_required",
    "insufficient_scope",
    "too_many_attempts",
)
CLIENT_AUTH = ("unauthenticated", "invalid_token", "client_identity_required")
BODY_ERRORS = ("malformed_json", "invalid_body", "payload_too_large", "unsupported_media_type")
ALWAYS = ("headers_too_large", "database_unavailable", "internal_error")


@dataclass(frozen=True, slots=True)
class Section:
    """A capability's part of the document: its paths, and the Structs they refer to."""

    paths: Callable[[], dict[str, Any]]
    structs: tuple[Any, ...]
    # Schemas no Struct describes as well as a hand-written one does (e.g. a body that is
    # one of two shapes, which one Struct decodes): added after, and over, the generated.
    schemas: Callable[[], dict[str, Any]] | None = None
    # Schemas a config decides, given it and the document's schemas: added over them by
    # configured_document (e.g. the configured names as enums).
    configured: Callable[[Config, dict[str, Any]], dict[str, Any]] | None = None


def json_content(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(name=ref)}}}


def error_responses(*codes: str) -> dict[str, Any]:
    """The error responses of `codes`, one per status, each code with its meaning."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(ERROR_CODES[code][0], []).append(code)
    return {
        str(status): {
            "description": "; ".join(f"`{c}`: {ERROR_CODES[c][1]}" for c in names),
            "content": json_content("ErrorBody"),
        }
        for status, names in sorted(by_status.items())
    }


def path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


def answer(description: str, schema: str | None = None) -> dict[str, Any]:
    return {"description": description} | ({"content": json_content(schema)} if schema else {})


def operation(
    summary: str,
    *,
    client: bool = False,
    scope: str | None = None,
    request: str | None = None,
    ok: dict[str, Any],
    errors: tuple[str, ...] = (),
    parameters: list[dict[str, Any]] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """One operation for a signed-in client (`client`) or a producer service's API key
    (holding `scope`), with its security and every error code it can answer."""
    codes = (CLIENT_AUTH if client else SERVICE_AUTH) + (BODY_ERRORS if request else ()) + errors
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}] if client else [{"apiKey": []}],
        "responses": ok | error_responses(*codes, *ALWAYS),
    }
    needs = f"Needs an API key with scope `{scope}`." if scope else None
    if needs or description:
        op["description"] = " ".join(filter(None, (needs, description)))
    if request:
        op["requestBody"] = {"required": True, "content": json_content(request)}
    if parameters:
        op["parameters"] = parameters
    return op


def _health_paths() -> dict[str, Any]:
    index = json_content("Index") | {"text/html": {"schema": {"type": "string"}}}
    return {
        "/": {"get": {"responses": {"200": {"description": "Links", "content": index}}}},
        "/healthz": {"get": {"responses": {"200": answer("Alive", "Health")}}},
        "/readyz": {
            "get": {
                "responses": {
                    "200": answer(
                        "Database reachable, schema at head; the scheduler backend", "Readiness"
                    ),
                    "503": answer("Not ready", "Health"),
                }
            }
        },
    }


@cache
def api_document(*sections: Section) -> dict[str, Any]:
    structs: list[Any] = []
    paths: dict[str, Any] = {}
    for section in sections:
        structs += section.structs
        paths |= section.paths()
    # Health and readiness close the document, which opens with the first capability mounted.
    structs += [ErrorBody, Health, Readiness, Index]
    paths |= _health_paths()
    _, components = msgspec.json.schema_components(structs, ref_template=REF)
    for section in sections:
        if section.schemas is not None:
            components |= section.schemas()
    return {
        "openapi": "3.1.0",
        "info": {"title": "mark-notify", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                # Producer services: `Authorization: Bearer mn_<prefix>_<secret>`.
                "apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "API key"},
            },
        },
    }


@cache
def api_document_json(*sections: Section) -> bytes:
    return msgspec.json.encode(api_document(*sections))


def configured_document(config: Config, *sections: Section) -> dict[str, Any]:
    """The document a service running `config` serves: api_document, with what the
    config decides filled in."""
    document = copy.deepcopy(api_document(*sections))
    schemas = document["components"]["schemas"]
    for section in sections:
        if section.configured is not None:
            schemas |= section.configured(config, schemas)
    return document
