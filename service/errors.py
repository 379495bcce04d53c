"""API errors: a stable machine-readable `code`, a human message, an HTTP status."""

from __future__ import annotations

from collections.abc import Mapping


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


# The codes a client can see, with their meaning; the OpenAPI document lists them.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "malformed_json": (400, "The body is not valid JSON."),
    "invalid_body": (400, "The JSON does not have the documented shape or limits."),
    "unknown_tag": (400, "No consumer is configured for this tag."),
    "batch_too_large": (400, "More items than the configured batch limit."),
    "unauthenticated": (401, "The tag needs an identified caller and none was given."),
    "invalid_token": (401, "The bearer token is malformed, expired or not for this service."),
    "wrong_event_type": (403, "The caller's kind (client/driver) does not match the tag."),
    "not_found": (404, "No such endpoint."),
    "method_not_allowed": (405, "The endpoint does not take this method."),
    "payload_too_large": (413, "The body is over the configured size limit."),
    "unsupported_media_type": (415, "The body must be application/json."),
    "database_unavailable": (503, "Storage is unavailable; retry after Retry-After seconds."),
    "internal_error": (500, "An unexpected error; nothing was stored."),
}


def api_error(code: str, message: str | None = None, **headers: str) -> ApiError:
    status, default = ERROR_CODES[code]
    return ApiError(
        status, code, message or default, {k.replace("_", "-"): v for k, v in headers.items()}
    )
