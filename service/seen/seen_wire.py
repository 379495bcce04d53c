"""Wire types of seen marks: the body POST /v1/seen takes and the answers it gives, and
the event a consumer of seen marks receives.

The request and answers are documented by service/seen/seen_openapi.py; the consumer
events by docs/consumer-api.yaml (service/seen/consumer_openapi.py) and docs/kafka/
(service/seen/kafka_schema.py), all generated from these Structs.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from service.text_rules import SAFE_PATTERN

TagName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_.-]*$(?!\n)",
        description="Notification type, e.g. `promotions`.",
    ),
]
ItemId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=256,
        # Printable text only (service/text_rules.py): ids end up in logs, headers, topics.
        pattern=SAFE_PATTERN,
        description="Id of the notification that was shown: no control characters.",
    ),
]
SeenStatus = Literal["recorded", "duplicate"]


class SeenItem(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    tag: TagName
    id: ItemId


class SeenRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Either one mark (`tag` + `id`) or a batch (`items`), never both."""

    tag: TagName | None = None
    id: ItemId | None = None
    # The limit is the configured api.max_batch (at most 1000), checked after decoding so
    # that a long batch is always `batch_too_large`, never a generic `invalid_body`.
    items: (
        Annotated[
            list[SeenItem],
            msgspec.Meta(min_length=1, description="At most `api.max_batch` items (<= 1000)."),
        ]
        | None
    ) = None


# The most items a batch may ever hold; a deployment's api.max_batch may be lower.
MAX_BATCH_CAP = 1000


class SeenBatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The batch form, as documented: SeenRequest decodes both forms in one Struct, and
    the OpenAPI document publishes them as `oneOf` SeenItem, SeenBatch."""

    items: Annotated[
        list[SeenItem],
        msgspec.Meta(
            min_length=1,
            max_length=MAX_BATCH_CAP,
            description="At most `api.max_batch` items (<= 1000): more is `batch_too_large`.",
        ),
    ]


class SeenResult(msgspec.Struct, frozen=True):
    tag: str
    id: str
    # "duplicate": already remembered, so nothing new was scheduled.
    status: SeenStatus


class SeenBatchResult(msgspec.Struct, frozen=True):
    items: list[SeenResult]


# What consumers receive: one shape per event type, the same for every consumer, over
# HTTP (a Standard Webhooks signed POST) and Kafka (the message value) alike.


class ClientSeenEvent(msgspec.Struct, frozen=True, tag="client", tag_field="event_type"):
    """A client (app user) has seen a notification."""

    event_id: str
    tag: str
    id: str
    seen_at: str
    user_id: str
    uid: str | None
    bound_uids: list[str]
    phone_id: str | None


class DriverSeenEvent(msgspec.Struct, frozen=True, tag="driver", tag_field="event_type"):
    """A driver has seen a notification."""

    event_id: str
    tag: str
    id: str
    seen_at: str
    db_id: str
    uuid: str


class AnonymousSeenEvent(msgspec.Struct, frozen=True, tag="anonymous", tag_field="event_type"):
    """A notification was seen by an unidentified caller: only tag and id are known."""

    event_id: str
    tag: str
    id: str
    seen_at: str


SeenEvent = ClientSeenEvent | DriverSeenEvent | AnonymousSeenEvent


def seen_event(event_id: str, payload: dict[str, object]) -> SeenEvent:
    """The consumer-facing event for an outbox payload written by record_seen_marks."""
    subject = payload.get("subject")
    fields = dict(subject) if isinstance(subject, dict) else {}
    body = {k: v for k, v in payload.items() if k != "subject"} | fields | {"event_id": event_id}
    event: SeenEvent = msgspec.convert(body, SeenEvent)
    return event
