"""Event intake and status, for producer services (scope `events:write`).

- `POST /v1/events` takes `{type, idempotency_key, recipients, data, send_at?}`, checks
  everything before writing anything, then stores and fans the event out through the
  same SQL function producers sharing the database call (notify_event()). A new event is
  **202** `{id, status, created: true}`; a repeat of the producer's idempotency key is
  **200** with the first event's id and status and `created: false`, and writes nothing,
  whatever else the repeat carries. Until this process has mirrored its event types
  into the database (it was down at start-up), a valid event is a 503, to retry.
- `GET /v1/events/{id}`: the event and its deliveries counted per channel and state.
- `GET /v1/notifications/{id}`: one notification, per channel.
With `events:write`, both read only the calling producer's events; anyone else's are 404
(`unknown_event`), as if they did not exist. A key with `events:read` (for operators and
support tools) reads any producer's, e.g. the events schedules post (producer
`mark-notify:schedules`) or the admin's mailings (`admin`).
"""

from __future__ import annotations

import uuid

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.errors import ApiError, api_error, unknown_name_error
from service.event_intake import IntakeRefused, accept_event, event_status
from service.http import json_response, read_json
from service.metrics import count_event
from service.notify.notify_wire import ChannelDelivery, EventRequest, NotificationStatus
from service.notify.users import check_time_zones
from service.sql import q
from service.state import state_of

# Beyond data and the recipient list, an event body is a few short fields; an inline
# user is at most ~600 bytes of JSON. Bodies larger than this cannot be valid.
BODY_OVERHEAD_BYTES = 16 * 1024
BYTES_PER_RECIPIENT = 640
# A body error about these fields gets the field's own code.
FIELD_CODES = {
    "$.type": "unknown_event_type",
    "$.idempotency_key": "invalid_idempotency_key",
    "$.recipients": "invalid_recipients",
    "$.send_at": "invalid_send_at",
}

_decode_event = msgspec.json.Decoder(EventRequest).decode
_encode = msgspec.json.Encoder().encode


def _check_recipients(event: EventRequest, limit: int) -> None:
    r = event.recipients
    given = [
        name
        for name, value in (
            ("user_ids", r.user_ids),
            ("users", r.users),
            ("topic", r.topic),
            ("all", r.all),
        )
        if value is not None
    ]
    if len(given) != 1:
        raise api_error(
            "invalid_recipients",
            f"Give exactly one of user_ids, users, topic, all (got {', '.join(given) or 'none'}).",
        )
    if r.all is False:
        raise api_error("invalid_recipients", "`all` can only be true.")
    listed = r.user_ids or r.users or []
    if len(listed) > limit:
        raise api_error(
            "invalid_recipients", f"{len(listed)} recipients; at most {limit} per event."
        )
    if r.users and len({u.id for u in r.users}) != len(r.users):
        raise api_error("invalid_recipients", "A user is listed twice in recipients.users.")


async def post_event(request: Request) -> Response:
    state = state_of(request)
    caller = await state.keys.require_scope(request, "events:write")
    notify = state.config.notify
    limit = max(
        state.config.api.max_body_bytes,
        BODY_OVERHEAD_BYTES + notify.max_data_bytes + notify.max_recipients * BYTES_PER_RECIPIENT,
    )
    try:
        event = await read_json(request, _decode_event, limit, FIELD_CODES)
    except ApiError as exc:
        if exc.code == "unknown_event_type":
            # A type that cannot even be a name: the names that are, as for an unknown one.
            exc.allowed = sorted(state.templates)
        raise

    templates = state.templates.get(event.type)
    if templates is None:
        raise unknown_name_error("unknown_event_type", "event type", event.type, state.templates)
    data = _encode(event.data)
    if len(data) > notify.max_data_bytes:
        raise api_error(
            "data_too_large",
            f"data is {len(data)} bytes as compact JSON; at most {notify.max_data_bytes}.",
        )
    digest = state.config.event_types[event.type].digest
    grouping = [] if digest is None else [f for f in (digest.key, digest.actor) if f]
    missing = sorted(templates.required_data - event.data.keys())
    if missing:
        used_by = f"the {event.type} templates"
        if set(missing) & set(grouping):
            used_by += " and its digests (which group by " + " and ".join(grouping) + ")"
        raise api_error("missing_data", f"data lacks {', '.join(missing)}, used by {used_by}.")
    for name in grouping:
        value = event.data[name]
        # The digest key and actor are stored as text: a JSON null, boolean, list or object
        # would group or name nothing sensible.
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise api_error(
                "missing_data",
                f"data.{name} must be a string or a number: {event.type} events are "
                "gathered into digests by it.",
            )
    _check_recipients(event, notify.max_recipients)
    await check_time_zones(
        request,
        (
            (f"recipients.users[{n}]", u.timezone)
            for n, u in enumerate(event.recipients.users or ())
        ),
        "invalid_recipients",
    )
    if not state.catalog_synced:
        # The database was down at start-up and has not been given this process's event
        # types yet (service/notify/catalog.py retries): notify_event() would refuse the
        # type as unknown, a 400 the producer must not act on. Checked last, so that a
        # body that can never succeed still gets its 400.
        raise state.unavailable()

    try:
        # One statement, so one transaction even on the autocommit pool.
        async with state.pool.connection() as conn:
            accepted = await accept_event(
                conn,
                producer=caller.producer,
                idempotency_key=event.idempotency_key,
                type_name=event.type,
                recipients=_encode(event.recipients).decode(),
                data=data.decode(),
                send_at=event.send_at,
                chunk=notify.chunk_size,
            )
    except IntakeRefused as exc:
        # The database's catalog disagrees with this process's configuration (e.g. the type
        # was removed by a newer deployment): its refusal, as a 400.
        raise api_error(exc.code, f"Refused by the database: {exc.message}.") from None
    count_event(event.type, accepted.created)
    return json_response(
        accepted,
        202 if accepted.created else 200,
        {"Location": f"/v1/events/{accepted.id}"},
    )


async def _readable_producer(request: Request) -> str | None:
    """Whose events the caller may read: its own producer's (events:write), or anyone's
    (None: events:read)."""
    caller = await state_of(request).keys.require_scope(request, "events:write", "events:read")
    return None if "events:read" in caller.scopes else caller.producer


async def get_event(request: Request) -> Response:
    state = state_of(request)
    producer = await _readable_producer(request)
    raw_id: str = request.path_params["event_id"]
    try:
        event_id = uuid.UUID(raw_id)
    except ValueError:
        raise api_error("unknown_event", f"No event {raw_id!r}.") from None
    async with state.pool.connection() as conn:
        status = await event_status(conn, event_id, producer, state.config.notify.seen_tag)
    if status is None:
        raise api_error("unknown_event", f"No event {raw_id!r}.")
    return json_response(status)


async def get_notification(request: Request) -> Response:
    state = state_of(request)
    producer = await _readable_producer(request)
    raw_id: str = request.path_params["notification_id"]
    # Notification ids are bigints; anything else cannot be one.
    if not (raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= 18):
        raise api_error("unknown_notification", f"No notification {raw_id!r}.")
    params = {
        "notification_id": int(raw_id),
        "producer": producer,
        "seen_tag": state.config.notify.seen_tag,
    }
    async with state.pool.connection() as conn:
        cur = await conn.execute(q("notification_status"), params)
        row = await cur.fetchone()
    if row is None:
        raise api_error("unknown_notification", f"No notification {raw_id!r}.")
    id_, event_id, type_, category, user_id, created_at, seen_at, channels = row
    return json_response(
        NotificationStatus(
            id=str(id_),
            event_id=str(event_id),
            type=type_,
            category=category,
            user_id=user_id,
            created_at=created_at,
            seen=seen_at is not None,
            seen_at=seen_at,
            channels=msgspec.convert(channels, dict[str, ChannelDelivery]),
        )
    )


ROUTES: list[BaseRoute] = [
    Route("/v1/events", post_event, methods=["POST"]),
    Route("/v1/events/{event_id}", get_event, methods=["GET"]),
    Route("/v1/notifications/{notification_id}", get_notification, methods=["GET"]),
]
