"""API errors: a stable machine-readable `code`, a human message, an HTTP status."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        allowed: Iterable[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        # For a name that is not configured (NAME_CODES): the names that are.
        self.allowed = sorted(set(allowed)) if allowed is not None else None


# The codes a client can see, with their meaning; the OpenAPI document lists them.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "malformed_json": (400, "The body is not valid JSON."),
    "invalid_body": (400, "The JSON does not have the documented shape or limits."),
    "unknown_tag": (400, "No consumer is configured for this tag."),
    "batch_too_large": (400, "More items than the configured batch limit."),
    "unauthenticated": (401, "The tag or endpoint needs an identified caller; none was given."),
    "invalid_token": (401, "The bearer token is malformed, expired or not for this service."),
    "wrong_event_type": (403, "The caller's kind (client/driver) does not match the tag."),
    "client_identity_required": (
        403,
        "A user endpoint: it takes a client's token, not a service API key or a driver.",
    ),
    # The notification API: producer services call it with API keys.
    "invalid_api_key": (401, "The API key is missing, unknown or revoked."),
    "service_key_required": (401, "A service endpoint: it takes an API key, not a user token."),
    "insufficient_scope": (403, "The API key lacks the scope this endpoint needs."),
    "invalid_query": (400, "A query parameter is malformed or out of range."),
    "invalid_user_id": (400, "A user id is 1-128 printable characters, no '/'."),
    "invalid_topic": (400, "A topic is 1-256 printable characters."),
    "unknown_event_type": (400, "No event type of this name is configured."),
    "missing_data": (400, "The event's data lacks variables its type's templates use."),
    "invalid_recipients": (
        400,
        "Recipients need exactly one of user_ids, users, topic, all, within the limits.",
    ),
    "invalid_idempotency_key": (400, "The idempotency key is 1-255 printable characters."),
    "invalid_send_at": (400, "send_at must be an ISO 8601 date-time with a time zone."),
    "unknown_category": (400, "No notification category of this name is configured."),
    "unknown_channel": (400, "No channel of this name is configured."),
    "transactional_category": (400, "A transactional category cannot be switched off."),
    "invalid_quiet_hours": (400, "Quiet hours are {start, end} as HH:MM, start != end."),
    "unknown_user": (404, "No such user."),
    "unknown_event": (
        404,
        "No event of this id from this producer (a key with events:read reads any producer's).",
    ),
    "unknown_notification": (
        404,
        "No notification of this id from this producer (or any, with events:read).",
    ),
    "not_found": (404, "No such endpoint."),
    "method_not_allowed": (405, "The endpoint does not take this method."),
    "payload_too_large": (413, "The body is over the configured size limit."),
    "headers_too_large": (431, "Too many request headers, or too many bytes of them."),
    "too_many_attempts": (
        429,
        "Too many failed API key checks from this address; retry after Retry-After seconds.",
    ),
    "data_too_large": (413, "The event's data is over notify.max_data_bytes."),
    "unsupported_media_type": (415, "The body must be application/json."),
    "database_unavailable": (503, "Storage is unavailable; retry after Retry-After seconds."),
    "internal_error": (500, "An unexpected error; nothing was stored."),
    "invalid_unsubscribe_link": (400, "The unsubscribe link is malformed, altered or expired."),
    "invalid_stream_token": (401, "The inbox stream token is missing, altered or expired."),
    "invalid_last_event_id": (400, "Last-Event-ID is not a position this stream gave."),
    "too_many_streams": (429, "Too many open inbox streams for this user or process."),
    "invalid_subscription": (
        400,
        "A Web Push subscription needs an https endpoint at a known push service and "
        "base64url keys: p256dh a P-256 point (65 bytes), auth 16 bytes.",
    ),
    "webpush_not_configured": (404, "This service sends no Web Push ([notify.webpush] unset)."),
    "invalid_preferences_link": (
        400,
        "The preference-center link is malformed, altered, expired or not a preferences link.",
    ),
    "invalid_preferences_form": (
        403,
        "The preference form was posted from another site, or its form token is missing, "
        "altered, expired or of another link.",
    ),
}


# The codes of a name that is not configured: their body's `allowed` lists the names that
# are, so a client (or a person) can tell a typo from a missing configuration.
NAME_CODES = frozenset({"unknown_tag", "unknown_event_type", "unknown_category", "unknown_channel"})


def unknown_name(kind: str, given: str, allowed: Iterable[str]) -> str:
    """The one wording of an unknown name, with the valid ones: the API's error bodies and
    the ops commands (bin/redeliver, bin/schedules, bin/admin) all say it this way."""
    names = sorted(set(allowed))
    valid = f"valid: {', '.join(names)}" if names else "there are none"
    return f"no {kind} named {given!r} ({valid})"


def unknown_name_error(
    code: str, kind: str, given: str, allowed: Iterable[str], where: str = ""
) -> ApiError:
    """The ApiError of a name that is not configured (one of NAME_CODES): `where` (e.g.
    "quiet_hours: ") opens the message, and the body's `allowed` lists the valid names."""
    if code not in NAME_CODES:
        raise ValueError(f"{code} is not a code of an unknown name")
    names = sorted(set(allowed))
    text = unknown_name(kind, given, names)
    message = f"{where}{text}." if where else f"{text[0].upper()}{text[1:]}."
    return ApiError(ERROR_CODES[code][0], code, message, allowed=names)


def api_error(code: str, message: str | None = None, **headers: str) -> ApiError:
    status, default = ERROR_CODES[code]
    return ApiError(
        status, code, message or default, {k.replace("_", "-"): v for k, v in headers.items()}
    )
