"""OpenAPI documents generated from the msgspec Structs, never written by hand."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from service.errors import ERROR_CODES
from service.messages import ErrorBody, Health, SeenBatchResult, SeenRequest, SeenResult
from service.notify import messages as notify

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


# The notification API: producer services with API keys, signed-in clients with tokens.
NOTIFY_STRUCTS: list[Any] = [
    notify.EventRequest,
    notify.EventAccepted,
    notify.EventStatus,
    notify.NotificationStatus,
    notify.UserBody,
    notify.UserImport,
    notify.UserView,
    notify.UsersImported,
    notify.PreferencesBody,
    notify.Preferences,
    notify.InboxPage,
]
SERVICE_AUTH = ("invalid_api_key", "service_key_required", "insufficient_scope")
CLIENT_AUTH = ("unauthenticated", "invalid_token", "client_identity_required")
BODY_ERRORS = ("malformed_json", "invalid_body", "payload_too_large", "unsupported_media_type")
ALWAYS = ("database_unavailable", "internal_error")
PREFERENCE_ERRORS = (
    "unknown_category",
    "unknown_channel",
    "transactional_category",
    "invalid_quiet_hours",
    "unknown_user",
)


def _path_param(name: str, description: str) -> dict[str, Any]:
    schema = {"type": "string"}
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


USER_ID = _path_param("user_id", "Your user id (printable, no `/`).")


def _op(
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
    """One operation of the notification API, with its security and every error code it
    can answer."""
    codes = (CLIENT_AUTH if client else SERVICE_AUTH) + (BODY_ERRORS if request else ()) + errors
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}] if client else [{"apiKey": []}],
        "responses": ok | _errors(*codes, *ALWAYS),
    }
    needs = f"Needs an API key with scope `{scope}`." if scope else None
    if needs or description:
        op["description"] = " ".join(filter(None, (needs, description)))
    if request:
        op["requestBody"] = {"required": True, "content": _json(request)}
    if parameters:
        op["parameters"] = parameters
    return op


def _answer(description: str, schema: str | None = None) -> dict[str, Any]:
    return {"description": description} | ({"content": _json(schema)} if schema else {})


def notify_paths() -> dict[str, Any]:
    event_errors = (
        "unknown_event_type",
        "missing_data",
        "data_too_large",
        "invalid_recipients",
        "invalid_idempotency_key",
        "invalid_send_at",
    )
    topic = [USER_ID, _path_param("topic", "An audience, e.g. `series:123`.")]
    preferences = _answer("The effective preferences.", "Preferences")
    return {
        "/v1/events": {
            "post": _op(
                "Accept an event and notify its recipients",
                scope="events:write",
                request="EventRequest",
                ok={
                    "202": _answer("A new event, stored and being sent.", "EventAccepted"),
                    "200": _answer(
                        "A repeat of the idempotency key: the first event; nothing written.",
                        "EventAccepted",
                    ),
                },
                errors=event_errors,
                description=(
                    "Everything is checked before anything is written. `data` values are "
                    "substituted into the templates as text, never evaluated."
                ),
            )
        },
        "/v1/events/{event_id}": {
            "get": _op(
                "An event's deliveries counted per channel and state",
                scope="events:write",
                ok={"200": _answer("The event.", "EventStatus")},
                errors=("unknown_event",),
                parameters=[_path_param("event_id", "The id POST /v1/events answered.")],
                description="Only the producer's own events.",
            )
        },
        "/v1/notifications/{notification_id}": {
            "get": _op(
                "One notification's delivery on every channel",
                scope="events:write",
                ok={"200": _answer("The notification.", "NotificationStatus")},
                errors=("unknown_notification",),
                parameters=[_path_param("notification_id", "A notification id.")],
                description="Only notifications of the producer's own events.",
            )
        },
        "/v1/users": {
            "put": _op(
                "Import up to 1000 users, each replaced as by PUT /v1/users/{user_id}",
                scope="users:write",
                request="UserImport",
                ok={"200": _answer("Written, in one statement.", "UsersImported")},
            )
        },
        "/v1/users/{user_id}": {
            "put": _op(
                "Create or replace a user (devices included)",
                scope="users:write",
                request="UserBody",
                ok={
                    "201": _answer("Created.", "UserView"),
                    "200": _answer("Replaced.", "UserView"),
                },
                errors=("invalid_user_id", "unknown_user"),
                parameters=[USER_ID],
                description=(
                    "PUT replaces the whole user: a field left out is cleared and `devices` "
                    "becomes the user's exact device list."
                ),
            ),
            "get": _op(
                "A user, with devices and topics",
                scope="users:read",
                ok={"200": _answer("The user.", "UserView")},
                errors=("invalid_user_id", "unknown_user"),
                parameters=[USER_ID],
            ),
            "delete": _op(
                "Erase a user",
                scope="users:write",
                ok={"204": _answer("Erased.")},
                errors=("invalid_user_id", "unknown_user"),
                parameters=[USER_ID],
                description=(
                    "Contacts, devices, topics and preferences go; the user's notifications "
                    "stay as anonymous history, and unsent deliveries are dropped."
                ),
            ),
        },
        "/v1/users/{user_id}/topics/{topic}": {
            method: _op(
                summary,
                scope="users:write",
                ok={"204": _answer("Done (a repeat is a no-op).")},
                errors=("invalid_user_id", "invalid_topic", "unknown_user"),
                parameters=topic,
            )
            for method, summary in (("put", "Join a topic"), ("delete", "Leave a topic"))
        },
        "/v1/users/{user_id}/preferences": {
            "get": _op(
                "A user's effective preferences",
                scope="users:read",
                ok={"200": preferences},
                errors=("invalid_user_id", "unknown_user"),
                parameters=[USER_ID],
            ),
            "put": _op(
                "Replace a user's preferences",
                scope="users:write",
                request="PreferencesBody",
                ok={"200": preferences},
                errors=("invalid_user_id", *PREFERENCE_ERRORS),
                parameters=[USER_ID],
            ),
        },
        "/v1/preferences": {
            "get": _op(
                "The signed-in user's effective preferences",
                client=True,
                ok={"200": preferences},
                errors=("unknown_user",),
            ),
            "put": _op(
                "Replace the signed-in user's preferences",
                client=True,
                request="PreferencesBody",
                ok={"200": preferences},
                errors=PREFERENCE_ERRORS,
            ),
        },
        "/v1/inbox": {
            "get": _op(
                "The signed-in user's in-app notifications, newest first",
                client=True,
                ok={"200": _answer("One page.", "InboxPage")},
                errors=("invalid_query",),
                parameters=[
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "`next_cursor` of the previous page.",
                    },
                ],
                description=(
                    "Mark an item seen with POST /v1/seen, tag `notify.seen_tag`, id = the "
                    "item's id."
                ),
            )
        },
    }


@cache
def api_document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [SeenRequest, SeenResult, SeenBatchResult, ErrorBody, Health, *NOTIFY_STRUCTS],
        ref_template=REF,
    )
    seen_errors = _errors(
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
            **notify_paths(),
        },
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
def api_document_json() -> bytes:
    return msgspec.json.encode(api_document())
