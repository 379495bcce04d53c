"""The seen marks' sections: [consumers] (who is told of marks) and [tags] (whose marks
are taken, for how long). Part of Config (service/config/load.py)."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from service.config.base import DeliveryPolicy, EventType, Name, Transport


class Consumer(DeliveryPolicy, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A service that owns some tags and receives their seen facts."""

    transport: Transport
    url: str | None = None
    # Kafka: overrides the per-event-type topic of [kafka.topics].
    topic: str | None = None
    # Standard Webhooks signing secret, "whsec_<base64>"; keep it out of files
    # (the environment overrides any key: service/config/load.py).
    secret: str | None = None


class Tag(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A notification type: who owns it, whose marks it takes, how long they are kept.

    Without a consumer the marks are only remembered, not delivered anywhere: the tag of
    the service's own notifications (see [notify].seen_tag) needs nobody to be told."""

    consumer: Name | None = None
    event_type: EventType
    remember_for: timedelta
