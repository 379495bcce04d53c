"""OpenAPI documents generated from the msgspec Structs, never written by hand."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from service.errors import ERROR_CODES
from service.messages import ErrorBody, Health, SeenBatchResult, SeenRequest, SeenResult

REF = "#/components/schemas/{name}"


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(name=ref)}}}


def _errors(*codes: str) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(ERROR_CODES[code][0], []).append(code)
    return {
        str(status): {
            "description": "; ".join(f"`{c}`: {ERROR_CODES[c][1]}" for c in names),
            "content": _json("ErrorBody"),
        }
        for status, names in sorted(by_status.items())
    }


@cache
def api_document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [SeenRequest, SeenResult, SeenBatchResult, ErrorBody, Health], ref_template=REF
    )
    seen_errors = _errors(
        "malformed_json",
        "invalid_body",
        "unknown_tag",
        "batch_too_large",
        "unauthenticated",
        "invalid_token",
        "wrong_event_type",
        "payload_too_large",
        "unsupported_media_type",
        "database_unavailable",
        "internal_error",
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "mark-notify", "version": "1"},
        "paths": {
            "/v1/seen": {
                "post": {
                    "summary": "Remember that notifications were shown to the caller",
                    "description": (
                        "200 means the marks are durably stored and their delivery to the "
                        "owning services is scheduled. A repeat is a 200 with status "
                        "`duplicate`. 4xx means never retry; 503 means retry after "
                        "Retry-After seconds."
                    ),
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "maxLength": 255},
                            "description": "Deduplicates anonymous marks across retries.",
                        }
                    ],
                    "security": [{"bearer": []}, {}],
                    "requestBody": {"required": True, "content": _json("SeenRequest")},
                    "responses": {
                        "200": {
                            "description": "Stored (`items` for the batch form).",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "oneOf": [
                                            {"$ref": REF.format(name="SeenResult")},
                                            {"$ref": REF.format(name="SeenBatchResult")},
                                        ]
                                    }
                                }
                            },
                        },
                        **seen_errors,
                    },
                }
            },
            "/healthz": {
                "get": {"responses": {"200": {"description": "Alive", "content": _json("Health")}}}
            },
            "/readyz": {
                "get": {
                    "responses": {
                        "200": {
                            "description": "Database reachable, schema at head",
                            "content": _json("Health"),
                        },
                        "503": {"description": "Not ready", "content": _json("Health")},
                    }
                }
            },
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


@cache
def api_document_json() -> bytes:
    return msgspec.json.encode(api_document())
