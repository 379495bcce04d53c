"""The seen marks' part of /openapi.json: POST /v1/seen, for signed-in and anonymous
callers alike."""

from __future__ import annotations

from typing import Any

from service.openapi import REF, Section, error_responses, json_content
from service.seen.seen_wire import SeenBatch, SeenBatchResult, SeenItem, SeenResult
from service.text_rules import HEADER_VALUE_PATTERN

STRUCTS = (SeenItem, SeenBatch, SeenResult, SeenBatchResult)


def _schemas() -> dict[str, Any]:
    # The body is one mark or a batch, never both and never neither: `oneOf` says so, where
    # the Struct that decodes it (SeenRequest) has all three fields optional.
    return {
        "SeenRequest": {
            "title": "SeenRequest",
            "description": "Either one mark (`tag` and `id`) or a batch (`items`), never both.",
            "oneOf": [
                {"$ref": REF.format(name="SeenItem")},
                {"$ref": REF.format(name="SeenBatch")},
            ],
        }
    }


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
        "headers_too_large",
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
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 255,
                            "pattern": HEADER_VALUE_PATTERN,
                        },
                        "description": (
                            "Deduplicates anonymous marks across retries: 1-255 visible "
                            "ASCII characters, else `invalid_body`."
                        ),
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


SECTION = Section(_paths, STRUCTS, _schemas)
