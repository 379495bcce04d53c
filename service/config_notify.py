"""Configuration of the notification half: channels, categories, event types (digest
policy included) and [notify]. Part of Config (service/config.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

import msgspec

from service.config_base import Breaker, DeliveryPolicy, Name, Positive

ChannelTransport = Literal["smtp", "provider", "inbox"]
ChannelKind = Literal["email", "sms", "push", "inbox"]
CHANNEL_KINDS: tuple[ChannelKind, ...] = ("email", "sms", "push", "inbox")
Priority = Literal["low", "normal", "high"]
Mode = Literal["instant", "digest"]
Locale = Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*\Z")]


class SmtpSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 25
    # Implicit TLS from the first byte (port 465), or STARTTLS after the greeting (587).
    tls: bool = False
    starttls: bool = False
    username: str | None = None
    # Keep it in the environment: MARK_NOTIFY__channels__email__smtp__password=...
    password: str | None = None
    sender: str = "mark-notify <notify@example.com>"
    reply_to: str | None = None
    # The domain of generated Message-IDs (default: the sender's).
    message_id_domain: str | None = None
    # How long an idle connection is kept for reuse.
    idle_timeout: timedelta = timedelta(seconds=30)


class Provider(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """An HTTP SMS or push provider: our documented JSON request, Standard Webhooks signed."""

    name: Name
    url: str
    secret: str
    timeout: timedelta | None = None
    breaker: Breaker | None = None


class Channel(DeliveryPolicy, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A way to reach a user. `kind` says what it carries (the templates it renders and the
    contact it needs), `transport` how: SMTP, HTTP providers tried in order (the first is
    the primary, the rest fallbacks), or the in-app inbox (delivered = listed)."""

    kind: ChannelKind
    transport: ChannelTransport
    smtp: SmtpSettings | None = None
    providers: list[Provider] = msgspec.field(default_factory=list)


class Category(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What users switch on and off. A transactional category (receipts, confirmations)
    cannot be switched off, muted or held by quiet hours."""

    transactional: bool = False
    # Channel name -> on unless the user says otherwise. Channels not listed are on.
    defaults: dict[Name, bool] = msgspec.field(default_factory=dict)
    description: str = ""


class Escalation(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Send on `channel` after `after` unless the notification has been seen by then."""

    channel: Name
    after: timedelta


# -- digests: service/schedule/digests.py
class DigestPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How the items of a `mode = "digest"` type gather into one notification per
    recipient and digest key (e.g. likes on one comment)."""

    # The data field whose value groups items (e.g. "comment_id"), and the one naming
    # who acted (e.g. "actor").
    key: str
    actor: str | None = None


class EventTypeSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    category: Name
    # In order of preference; every one that the user has on and a contact for is sent.
    channels: Annotated[list[Name], msgspec.Meta(min_length=1)]
    mode: Mode = "instant"
    priority: Priority = "normal"
    # A notification not sent within ttl of its event is dropped (suppressed: expired).
    ttl: timedelta = timedelta(days=1)
    default_locale: Locale = "en"
    # The folder under config/templates/ (default: the type's name).
    templates: Name | None = None
    escalation: Escalation | None = None
    # Required when mode = "digest".
    digest: DigestPolicy | None = None
    # Template variables a producer may leave out (the templates must handle them).
    optional_data: list[str] = msgspec.field(default_factory=list)
    description: str = ""


class NotifySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # Where the links in notifications point (one-click unsubscribe).
    public_url: str = "http://127.0.0.1:8000"
    # Signs unsubscribe links; keep it in the environment outside development.
    unsubscribe_secret: str | None = None
    unsubscribe_ttl: timedelta = timedelta(days=60)
    # The seen tag whose marks (id = notification id) mean "the user saw this".
    seen_tag: Name = "notifications"
    max_data_bytes: Positive = 16 * 1024
    # Longest explicit recipient list (user_ids or users) in one event.
    max_recipients: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 10_000
    # The event types' templates: <templates_dir>/<type>/<locale>.toml (relative paths are
    # from the repository root).
    templates_dir: str = "config/templates"
    # Users materialized per transaction for topic / all audiences.
    chunk_size: Annotated[int, msgspec.Meta(ge=100, le=1_000_000)] = 50_000
