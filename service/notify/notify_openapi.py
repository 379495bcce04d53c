"""The notification API's part of /openapi.json: producer services with API keys,
signed-in clients with tokens, and the links of emails: one-click unsubscribe and the
preference center."""

from __future__ import annotations

import copy
from typing import Any

from service.config.load import Config
from service.notify import notify_wire as notify
from service.notify import preference_center, preference_form
from service.notify.inbox_stream import MAX_POSITION_CHARS, POSITION_PATTERN
from service.notify.inbox_stream import PATH as STREAM_PATH
from service.notify.unsubscribe import COMPACT_JWS_PATTERN, MAX_TOKEN_CHARS, UnsubscribeResult
from service.notify.unsubscribe import PATH as UNSUBSCRIBE_PATH
from service.openapi import (
    ALWAYS,
    Section,
    answer,
    error_responses,
    json_content,
    operation,
    path_param,
)
from service.wire import EventAccepted, EventStatus

STRUCTS = (
    notify.EventRequest,
    EventAccepted,
    EventStatus,
    notify.NotificationStatus,
    notify.UserBody,
    notify.UserImport,
    notify.UserView,
    notify.UsersImported,
    notify.PreferencesBody,
    notify.Preferences,
    notify.InboxPage,
    notify.StreamToken,
    notify.StreamReady,
    notify.StreamChanges,
    notify.WebPushSubscription,
    notify.WebPushEndpoint,
    notify.WebPushSubscriptionView,
    notify.WebPushKey,
    UnsubscribeResult,
)
PREFERENCE_ERRORS = (
    "unknown_category",
    "unknown_channel",
    "transactional_category",
    "invalid_quiet_hours",
    "unknown_user",
)
USER_ID = path_param("user_id", "Your user id (printable, no `/`).")
# A token with a `/` (or none) is another path: no route takes it.
LINK_ERRORS = ("invalid_unsubscribe_link", "transactional_category", "not_found")
HTML_PAGE = {"text/html": {"schema": {"type": "string"}}}


def _unsubscribe_paths() -> dict[str, Any]:
    # The link is its own credential (a signed token naming user, category and channel):
    # no security scheme applies.
    token = [path_param("token", "The signed token of the email's List-Unsubscribe link.")]
    token[0]["schema"] |= {"pattern": COMPACT_JWS_PATTERN, "maxLength": MAX_TOKEN_CHARS}
    return {
        UNSUBSCRIBE_PATH: {
            "get": {
                "summary": "The page of an unsubscribe link; it changes nothing",
                "description": (
                    "Mail scanners prefetch links, so GET never unsubscribes: it shows a page "
                    "whose button POSTs to the same URL."
                ),
                "security": [],
                "parameters": token,
                "responses": {"200": {"description": "A page to confirm.", "content": HTML_PAGE}}
                | error_responses(*LINK_ERRORS, "internal_error"),
            },
            "post": {
                "summary": "One-click unsubscribe (RFC 8058)",
                "description": (
                    "Switches the link's channel of its category off for its user and keeps "
                    "every other preference. A repeat changes nothing and answers the same; a "
                    "user that no longer exists is a 200 with status `unknown_user`. The "
                    "answer is JSON when Accept asks for application/json and not text/html, "
                    "else a short page. Any body is accepted."
                ),
                "security": [],
                "parameters": token,
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "Unsubscribed (or nothing to do).",
                        "content": json_content("UnsubscribeResult") | HTML_PAGE,
                    }
                }
                | error_responses(*LINK_ERRORS, *ALWAYS),
            },
        }
    }


def _webpush_paths() -> dict[str, Any]:
    subscription = "WebPushSubscriptionView"
    put_ok = {
        "201": answer("Registered (a new endpoint, or another user's until now).", subscription),
        "200": answer("Registered before: its keys replaced.", subscription),
    }
    put_errors = ("invalid_subscription", "webpush_not_configured", "unknown_user")
    delete_ok = {"204": answer("Forgotten (or there was no such subscription).")}
    delete_errors = ("webpush_not_configured", "unknown_user")
    put_text = (
        "The body is the browser's `PushSubscription.toJSON()` as it is. An endpoint is "
        "one browser: registered for another user, it moves to this one."
    )
    return {
        "/v1/webpush-key": {
            "get": {
                "summary": "The VAPID public key a page subscribes with (applicationServerKey)",
                "security": [],
                "responses": {"200": answer("The key, base64url.", "WebPushKey")}
                | error_responses("webpush_not_configured", *ALWAYS),
            }
        },
        "/v1/webpush-subscriptions": {
            "put": operation(
                "Register the signed-in user's browser for Web Push",
                client=True,
                request="WebPushSubscription",
                ok=put_ok,
                errors=put_errors,
                description=put_text,
            ),
            "delete": operation(
                "Forget a Web Push subscription of the signed-in user",
                client=True,
                request="WebPushEndpoint",
                ok=delete_ok,
                errors=delete_errors,
            ),
        },
        "/v1/users/{user_id}/webpush-subscriptions": {
            "put": operation(
                "Register a user's browser for Web Push",
                scope="users:write",
                request="WebPushSubscription",
                ok=put_ok,
                errors=("invalid_user_id", *put_errors),
                parameters=[USER_ID],
                description=put_text,
            ),
            "delete": operation(
                "Forget a Web Push subscription of a user",
                scope="users:write",
                request="WebPushEndpoint",
                ok=delete_ok,
                errors=("invalid_user_id", *delete_errors),
                parameters=[USER_ID],
            ),
        },
    }


def _stream_paths() -> dict[str, Any]:
    position = {"type": "string", "pattern": POSITION_PATTERN, "maxLength": MAX_POSITION_CHARS}
    token = {"type": "string", "pattern": COMPACT_JWS_PATTERN, "maxLength": MAX_TOKEN_CHARS}
    events = {
        "text/event-stream": {
            "schema": {"type": "string"},
            "description": (
                "Messages `ready` (data: StreamReady) and `changes` (data: StreamChanges), each "
                "with an `id` to resume from; `: ping` comments as heartbeats."
            ),
        }
    }
    return {
        "/v1/inbox/stream-token": {
            "post": operation(
                "A token that opens the signed-in user's live inbox stream",
                client=True,
                ok={"200": answer("The token and the stream's URL.", "StreamToken")},
                description=(
                    "EventSource cannot send an Authorization header: trade the client's "
                    "token for this one (minutes long, good only for opening the stream)."
                ),
            )
        },
        STREAM_PATH: {
            "get": {
                "summary": "The signed-in user's live inbox (Server-Sent Events)",
                "description": (
                    "New inbox items, items marked seen on any device, and the unseen count. "
                    "Resume with the last message's id as `Last-Event-ID` (what a browser's "
                    "reconnect sends) or `last_event_id`: nothing is missed or repeated."
                ),
                "parameters": [
                    {"name": "token", "in": "query", "required": True, "schema": token},
                    {"name": "last_event_id", "in": "query", "required": False, "schema": position},
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": position,
                    },
                ],
                "responses": {
                    "200": {"description": "The stream.", "content": events},
                    **error_responses(
                        "invalid_stream_token",
                        "invalid_last_event_id",
                        "too_many_streams",
                        *ALWAYS,
                    ),
                },
            }
        },
    }


# The preference center's refusals; those a handler raises may come as a page (HTML).
CENTER_GET_ERRORS = ("invalid_preferences_link", "unknown_user", "not_found")
CENTER_POST_ERRORS = (
    *CENTER_GET_ERRORS,
    "invalid_preferences_form",
    "invalid_body",
    "payload_too_large",
    "unsupported_media_type",
    *PREFERENCE_ERRORS,
)
NAME = "[a-z0-9][a-z0-9_.-]*"
CLOCK_OR_EMPTY = {"type": "string", "pattern": r"^(([01][0-9]|2[0-3]):[0-5][0-9])?$(?!\n)"}
SWITCH = {"type": "string", "enum": list(preference_form.SWITCH_VALUES)}


def _with_pages(responses: dict[str, Any], statuses: tuple[str, ...]) -> dict[str, Any]:
    """`responses` where each of `statuses` may also be a page, for a browser."""
    for status in statuses:
        responses[status]["content"] = responses[status]["content"] | HTML_PAGE
    return responses


def _preference_center_paths() -> dict[str, Any]:
    # The link is its own credential (a signed token naming the user): no scheme applies.
    token = path_param("token", "The signed token of an email's preference-center link.")
    token["schema"] |= {"pattern": COMPACT_JWS_PATTERN, "maxLength": MAX_TOKEN_CHARS}
    saved = {
        "name": "saved",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "Present after a save (the redirect): the page says it was saved.",
    }
    negotiated = (
        " A refusal is a page unless Accept asks for application/json and not text/html: "
        "then the JSON error, with the same status and code."
    )
    return {
        preference_center.PATH: {
            "get": {
                "summary": "The preference center: a user's preferences as a form",
                "description": (
                    "The page behind every email's \"manage notifications\" link: the user's "
                    "effective preferences (as GET /v1/preferences answers them) as a form "
                    "that needs no login and no JavaScript. It changes nothing." + negotiated
                ),
                "security": [],
                "parameters": [token, saved],
                "responses": {"200": {"description": "The page.", "content": HTML_PAGE}}
                | _with_pages(error_responses(*CENTER_GET_ERRORS, *ALWAYS), ("400", "404")),
            },
            "post": {
                "summary": "Save the preference center's form",
                "description": (
                    "Applies the page's form through the rule of PUT /v1/preferences and "
                    "answers 303 back to the page. A field left out leaves its setting as it "
                    "is. Refused, and nothing written: a form another site posted "
                    "(Sec-Fetch-Site, Origin) or whose `form_token` is not the page's, and "
                    "whatever PUT /v1/preferences refuses." + negotiated
                ),
                "security": [],
                "parameters": [token],
                "requestBody": {
                    "required": True,
                    "content": {
                        preference_center.FORM_TYPE: {
                            "schema": {"$ref": "#/components/schemas/PreferenceForm"}
                        }
                    },
                },
                "responses": {
                    "303": {
                        "description": "Saved: to the page again, which says so.",
                        "headers": {
                            "Location": {
                                "schema": {"type": "string", "enum": ["?saved=1"]},
                                "description": "This URL, with `saved`.",
                            }
                        },
                    }
                }
                | _with_pages(
                    error_responses(*CENTER_POST_ERRORS, *ALWAYS),
                    ("400", "403", "404", "413", "415"),
                ),
            },
        }
    }


def _preference_form(config: Config | None) -> dict[str, Any]:
    """The preference center's form: with a config, exactly its boxes and windows."""
    form: dict[str, Any] = {
        "type": "object",
        "description": (
            "The page's form: `on/<category>/<channel>` and `muted` are `on` or `off` (the "
            "last value of a name counts), `quiet/<channel>/start` and `/end` are HH:MM or "
            "both empty (no quiet hours), `action` is `save` or `no_email` (email off for "
            "every non-transactional category)."
        ),
        "properties": {
            "form_token": {"type": "string", "description": "The page's hidden form token."},
            "action": {"type": "string", "enum": list(preference_form.ACTIONS)},
            "muted": SWITCH,
        },
        "required": ["form_token"],
        "additionalProperties": False,
    }
    if config is None:
        form["patternProperties"] = {
            f"^on/{NAME}/{NAME}$": SWITCH,
            f"^quiet/{NAME}/(start|end)$": CLOCK_OR_EMPTY,
        }
        return form
    for name, category in config.categories.items():
        for channel in config.channels:
            on = {"type": "string", "enum": ["on"]} if category.transactional else SWITCH
            form["properties"][f"on/{name}/{channel}"] = on
    for channel in config.channels:
        for end in ("start", "end"):
            form["properties"][f"quiet/{channel}/{end}"] = CLOCK_OR_EMPTY
    return form


def _paths() -> dict[str, Any]:
    event_errors = (
        "unknown_event_type",
        "missing_data",
        "data_too_large",
        "invalid_recipients",
        "invalid_idempotency_key",
        "invalid_send_at",
    )
    topic = [USER_ID, path_param("topic", "An audience, e.g. `series:123`.")]
    preferences = answer("The effective preferences.", "Preferences")
    return (
        _unsubscribe_paths()
        | _webpush_paths()
        | _stream_paths()
        | _preference_center_paths()
        | {
            "/v1/events": {
                "post": operation(
                    "Accept an event and notify its recipients",
                    scope="events:write",
                    request="EventRequest",
                    ok={
                        "202": answer("A new event, stored and being sent.", "EventAccepted"),
                        "200": answer(
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
                "get": operation(
                    "An event's deliveries counted per channel and state",
                    scope="events:write",
                    ok={"200": answer("The event.", "EventStatus")},
                    errors=("unknown_event",),
                    parameters=[path_param("event_id", "The id POST /v1/events answered.")],
                    description=(
                        "Only the producer's own events (another's is `unknown_event`); a key "
                        "with scope `events:read` instead reads any producer's."
                    ),
                )
            },
            "/v1/notifications/{notification_id}": {
                "get": operation(
                    "One notification's delivery on every channel",
                    scope="events:write",
                    ok={"200": answer("The notification.", "NotificationStatus")},
                    errors=("unknown_notification",),
                    parameters=[path_param("notification_id", "A notification id.")],
                    description=(
                        "Only notifications of the producer's own events; a key with scope "
                        "`events:read` instead reads any producer's."
                    ),
                )
            },
            "/v1/users": {
                "put": operation(
                    "Import up to 1000 users, each replaced as by PUT /v1/users/{user_id}",
                    scope="users:write",
                    request="UserImport",
                    ok={"200": answer("Written, in one statement.", "UsersImported")},
                )
            },
            "/v1/users/{user_id}": {
                "put": operation(
                    "Create or replace a user (devices included)",
                    scope="users:write",
                    request="UserBody",
                    ok={
                        "201": answer("Created.", "UserView"),
                        "200": answer("Replaced.", "UserView"),
                    },
                    errors=("invalid_user_id", "unknown_user"),
                    parameters=[USER_ID],
                    description=(
                        "PUT replaces the whole user: a field left out is cleared and `devices` "
                        "becomes the user's exact device list."
                    ),
                ),
                "get": operation(
                    "A user, with devices, topics and Web Push subscriptions",
                    scope="users:read",
                    ok={"200": answer("The user.", "UserView")},
                    errors=("invalid_user_id", "unknown_user"),
                    parameters=[USER_ID],
                ),
                "delete": operation(
                    "Erase a user",
                    scope="users:write",
                    ok={"204": answer("Erased.")},
                    errors=("invalid_user_id", "unknown_user"),
                    parameters=[USER_ID],
                    description=(
                        "Contacts, devices, topics, Web Push subscriptions and preferences "
                        "go; the user's notifications stay as anonymous history, and unsent "
                        "deliveries are dropped."
                    ),
                ),
            },
            "/v1/users/{user_id}/topics/{topic}": {
                method: operation(
                    summary,
                    scope="users:write",
                    ok={"204": answer("Done (a repeat is a no-op).")},
                    errors=("invalid_user_id", "invalid_topic", "unknown_user"),
                    parameters=topic,
                )
                for method, summary in (("put", "Join a topic"), ("delete", "Leave a topic"))
            },
            "/v1/users/{user_id}/preferences": {
                "get": operation(
                    "A user's effective preferences",
                    scope="users:read",
                    ok={"200": preferences},
                    errors=("invalid_user_id", "unknown_user"),
                    parameters=[USER_ID],
                ),
                "put": operation(
                    "Replace a user's preferences",
                    scope="users:write",
                    request="PreferencesBody",
                    ok={"200": preferences},
                    errors=("invalid_user_id", *PREFERENCE_ERRORS),
                    parameters=[USER_ID],
                ),
            },
            "/v1/preferences": {
                "get": operation(
                    "The signed-in user's effective preferences",
                    client=True,
                    ok={"200": preferences},
                    errors=("unknown_user",),
                ),
                "put": operation(
                    "Replace the signed-in user's preferences",
                    client=True,
                    request="PreferencesBody",
                    ok={"200": preferences},
                    errors=PREFERENCE_ERRORS,
                ),
            },
            "/v1/inbox": {
                "get": operation(
                    "The signed-in user's in-app notifications, newest first",
                    client=True,
                    ok={"200": answer("One page.", "InboxPage")},
                    errors=("invalid_query",),
                    parameters=[
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 100,
                                "default": 20,
                            },
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
                        "item's id. A query parameter other than these two is `invalid_query`."
                    ),
                )
            },
        }
    )


def _configured(config: Config, schemas: dict[str, Any]) -> dict[str, Any]:
    """PreferencesBody with this config's names: a category or channel it lacks, or a
    transactional category switched off, is refused by the schema as by the service."""
    body = copy.deepcopy(schemas["PreferencesBody"])
    channels = {"enum": sorted(config.channels)}

    def switches(value: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "propertyNames": channels, "additionalProperties": value}

    body["properties"]["categories"] |= {
        "propertyNames": {"enum": sorted(config.categories)},
        "additionalProperties": switches({"type": "boolean"}),
        "properties": {
            name: switches({"type": "boolean", "enum": [True]})
            for name, category in sorted(config.categories.items())
            if category.transactional
        },
    }
    body["properties"]["quiet_hours"]["propertyNames"] = channels
    return {"PreferencesBody": body, "PreferenceForm": _preference_form(config)}


SECTION = Section(
    _paths,
    STRUCTS,
    schemas=lambda: {"PreferenceForm": _preference_form(None)},
    configured=_configured,
)
