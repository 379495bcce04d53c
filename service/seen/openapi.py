"""The seen marks' part of /openapi.json: POST /v1/seen, for signed-in and anonymous
callers alike."""

from __future__ import annotations

from typing import Any

from service.openapi import REF, Section, error_responses, json_content
from service.seen.messages import SeenBatchResult, SeenRequest, SeenResult

STRUCTS = (SeenRequest, SeenResult, SeenBatchResult)


def _paths() -> dict[str, Any]:
    seen_errors = error_responses(
        "malformed_json",
        "invalid_body",
        "unknown_tag",
        "batch_too_large",
        "unauthenticated",
        "invalid_token",
        "wrong_event_type",
        "client_identity_required",
        "payload_too_large",
        "unsupported_media_type",
        "database_unavailable",
        "internal_error",
    )
    return {
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
                "requestBody": {"required": True, "content": json_content("SeenRequest")},
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
        }
    }


SECTION = Section(_paths, STRUCTS)
