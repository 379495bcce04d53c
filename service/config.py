"""Configuration: msgspec Structs parsed from a TOML file, overridden by the environment.

A wrong file fails at start-up with the file, the key and the reason. Environment:
- `MARK_NOTIFY_CONFIG`: the file (default `config/mark-notify.toml`);
- `DATABASE_URL`, `MARK_NOTIFY_ENV`: the database and the environment;
- `MARK_NOTIFY__<section>__<key>...=<value>`: any key. An array, inline table or quoted
  string is read as TOML; any other value is text, converted where the key wants a
  number, boolean or duration. Secrets belong here, e.g.
  `MARK_NOTIFY__consumers__promotions__secret=whsec_...`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from service.config_admin import AdminSettings
from service.config_base import (
    EVENT_TYPES,
    ROOT,
    Backoff,
    Breaker,
    ConfigError,
    DeliveryPolicy,
    Environment,
    EventType,
    Name,
    Positive,
    Transport,
    refuse_unsafe_secret,
)
from service.config_notify import (
    CHANNEL_KINDS,
    Category,
    Channel,
    ChannelKind,
    ChannelTransport,
    DigestPolicy,
    Escalation,
    EventTypeSettings,
    Locale,
    Mode,
    NotifySettings,
    Priority,
    Provider,
    SmtpSettings,
)
from service.config_schedule import RetentionSettings, SchedulerSettings, ScheduleSettings

# The Structs of every section are importable from here, as they always were.
__all__ = [
    "CHANNEL_KINDS",
    "DEFAULT_CONFIG",
    "ENV_PREFIX",
    "EVENT_TYPES",
    "ROOT",
    "AdminSettings",
    "ApiSettings",
    "Backoff",
    "Breaker",
    "Category",
    "Channel",
    "ChannelKind",
    "ChannelTransport",
    "ClaimMap",
    "Config",
    "ConfigError",
    "Consumer",
    "DatabaseSettings",
    "DeliveryPolicy",
    "DigestPolicy",
    "DispatcherSettings",
    "Environment",
    "Escalation",
    "EventType",
    "EventTypeSettings",
    "GatewayHeaders",
    "GatewaySettings",
    "IdentitySettings",
    "JwtSettings",
    "KafkaSettings",
    "Locale",
    "Mode",
    "Name",
    "NotifySettings",
    "Positive",
    "Priority",
    "Provider",
    "RetentionSettings",
    "ScheduleSettings",
    "SchedulerSettings",
    "SmtpSettings",
    "Tag",
    "Transport",
    "apply_env",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG = ROOT / "config" / "mark-notify.toml"
ENV_PREFIX = "MARK_NOTIFY__"


class Consumer(DeliveryPolicy, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A service that owns some tags and receives their seen facts."""

    transport: Transport
    url: str | None = None
    # Kafka: overrides the per-event-type topic of [kafka.topics].
    topic: str | None = None
    # Standard Webhooks signing secret, "whsec_<base64>"; keep it out of files (see above).
    secret: str | None = None


class Tag(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A notification type: who owns it, whose marks it takes, how long they are kept.

    Without a consumer the marks are only remembered, not delivered anywhere: the tag of
    the service's own notifications (see [notify].seen_tag) needs nobody to be told."""

    consumer: Name | None = None
    event_type: EventType
    remember_for: timedelta


class ClaimMap(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Which JWT claim carries which subject field."""

    kind: str = "kind"
    user_id: str = "sub"
    uid: str = "uid"
    bound_uids: str = "bound_uids"
    phone_id: str = "phone_id"
    db_id: str = "db_id"
    uuid: str = "uuid"


class JwtSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    audience: str
    issuer: str
    algorithms: list[Literal["HS256", "RS256"]] = msgspec.field(default_factory=lambda: ["HS256"])
    # HS256 shared secret; only from the environment outside development.
    secret: str | None = None
    public_key_file: str | None = None
    jwks_file: str | None = None
    leeway: timedelta = timedelta(seconds=30)
    claims: ClaimMap = ClaimMap()


class GatewayHeaders(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    uid: str = "X-Yandex-UID"
    user_id: str = "X-YaTaxi-UserId"
    phone_id: str = "X-YaTaxi-PhoneId"
    bound_uids: str = "X-YaTaxi-Bound-Uids"
    db_id: str = "X-YaTaxi-Park-Id"
    uuid: str = "X-YaTaxi-Driver-Profile-Id"


class GatewaySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Identity headers set by a trusted gateway; honoured only from trusted_peers."""

    enabled: bool = False
    trusted_peers: list[str] = msgspec.field(default_factory=list)
    headers: GatewayHeaders = GatewayHeaders()


class IdentitySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    jwt: JwtSettings | None = None
    gateway: GatewaySettings = GatewaySettings()


class DatabaseSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    url: str | None = None
    pool_min: Positive = 2
    pool_max: Positive = 16
    connect_timeout: timedelta = timedelta(seconds=5)
    # How long a request waits for a pooled connection before answering 503.
    acquire_timeout: timedelta = timedelta(seconds=3)


class ApiSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    max_body_bytes: Positive = 64 * 1024
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    retry_after_s: Positive = 2


class KafkaSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: dict[EventType, str] = msgspec.field(
        default_factory=lambda: {t: f"mark-notify.seen.{t}" for t in EVENT_TYPES}
    )
    # Off only for brokers that reject the idempotent-producer handshake (Tansu in tests).
    enable_idempotence: bool = True
    linger_ms: Annotated[int, msgspec.Meta(ge=0)] = 5
    request_timeout: timedelta = timedelta(seconds=10)


class DispatcherSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # Default: host-pid. It is written into claimed rows, so ops can tell who holds them.
    name: str | None = None
    # How long a claim holds its rows; a dead dispatcher's rows are due again after it. The
    # dispatcher raises it per consumer to cover a batch's worst case (timeout x rounds),
    # so a live, slow dispatcher's rows are never claimed twice.
    lease: timedelta = timedelta(seconds=60)
    # The slow poll that bounds the delay of a lost wake-up.
    sweep_interval: timedelta = timedelta(seconds=5)
    # How often waiting rows of disabled or unknown consumers are counted and reported.
    census_interval: timedelta = timedelta(seconds=60)
    pool_max: Positive = 8
    # GET /metrics of this dispatcher (docs/observability.md); 0: none. Loopback by
    # default: set "0.0.0.0" where Prometheus scrapes from another host or container.
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9464
    metrics_host: str = "127.0.0.1"


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    environment: Environment = "production"
    database: DatabaseSettings = DatabaseSettings()
    api: ApiSettings = ApiSettings()
    identity: IdentitySettings = IdentitySettings()
    kafka: KafkaSettings = KafkaSettings()
    dispatcher: DispatcherSettings = DispatcherSettings()
    consumers: dict[Name, Consumer] = msgspec.field(default_factory=dict)
    tags: dict[Name, Tag] = msgspec.field(default_factory=dict)
    notify: NotifySettings = NotifySettings()
    channels: dict[Name, Channel] = msgspec.field(default_factory=dict)
    categories: dict[Name, Category] = msgspec.field(default_factory=dict)
    event_types: dict[Name, EventTypeSettings] = msgspec.field(default_factory=dict)
    scheduler: SchedulerSettings = SchedulerSettings()
    retention: RetentionSettings = RetentionSettings()
    schedules: dict[Name, ScheduleSettings] = msgspec.field(default_factory=dict)
    admin: AdminSettings = AdminSettings()

    def __post_init__(self) -> None:
        # First: a placeholder is named as one, not as a secret of the wrong format.
        for setting, secret in self._secrets():
            refuse_unsafe_secret(setting, secret, self.environment)
        for name, tag in self.tags.items():
            if tag.remember_for <= timedelta(0):
                raise ValueError(f"tags.{name}.remember_for: must be positive")
            if tag.consumer is None:
                continue
            if tag.consumer not in self.consumers:
                raise ValueError(f"tags.{name}.consumer: no consumer named {tag.consumer!r}")
            consumer = self.consumers[tag.consumer]
            if (
                consumer.transport == "kafka"
                and not consumer.topic
                and tag.event_type not in self.kafka.topics
            ):
                # Caught here rather than as "failed" rows at delivery time.
                raise ValueError(
                    f"tags.{name}: consumer {tag.consumer!r} has no topic and kafka.topics "
                    f"has none for {tag.event_type!r} events"
                )
        for name, consumer in self.consumers.items():
            where = f"consumers.{name}"
            if consumer.transport == "http":
                if not consumer.url or not re.match(r"^https?://", consumer.url):
                    raise ValueError(f"{where}.url: an http consumer needs an http(s) URL")
                if not consumer.secret:
                    raise ValueError(f"{where}.secret: an http consumer needs a signing secret")
                if not consumer.secret.startswith("whsec_"):
                    raise ValueError(f"{where}.secret: expected 'whsec_<base64>'")
            if consumer.timeout <= timedelta(0):
                raise ValueError(f"{where}.timeout: must be positive")
            if consumer.backoff.initial <= timedelta(0) or consumer.backoff.cap <= timedelta(0):
                raise ValueError(f"{where}.backoff: initial and cap must be positive")
            if consumer.breaker.cooldown <= timedelta(0):
                raise ValueError(f"{where}.breaker.cooldown: must be positive")
        self._check_notify()
        for key in ("lease", "sweep_interval", "census_interval"):
            if getattr(self.dispatcher, key) <= timedelta(0):
                raise ValueError(f"dispatcher.{key}: must be positive")
        for peer in self.identity.gateway.trusted_peers:
            try:
                ipaddress.ip_network(peer, strict=False)
            except ValueError as exc:
                raise ValueError(f"identity.gateway.trusted_peers: {exc}") from None
        if self.identity.gateway.enabled and not self.identity.gateway.trusted_peers:
            raise ValueError("identity.gateway.trusted_peers: required when the gateway is on")

    def _secrets(self) -> list[tuple[str, str | None]]:
        """Every secret of the config, named by its setting (the database URL holds one)."""
        found = [
            ("database.url (DATABASE_URL)", self.database.url),
            ("identity.jwt.secret", self.identity.jwt.secret if self.identity.jwt else None),
            ("notify.unsubscribe_secret", self.notify.unsubscribe_secret),
        ]
        found += [(f"consumers.{n}.secret", c.secret) for n, c in self.consumers.items()]
        for name, channel in self.channels.items():
            if channel.smtp is not None:
                found.append((f"channels.{name}.smtp.password", channel.smtp.password))
            found += [
                (f"channels.{name}.providers[{i}].secret", p.secret)
                for i, p in enumerate(channel.providers)
            ]
        return found

    def _check_notify(self) -> None:
        clash = set(self.channels) & set(self.consumers)
        if clash:
            # Both are outbox destinations, named in one column.
            raise ValueError(f"channels.{min(clash)}: a consumer has the same name")
        for name, channel in self.channels.items():
            where = f"channels.{name}"
            expected = {"email": "smtp", "sms": "provider", "push": "provider", "inbox": "inbox"}
            if channel.transport != expected[channel.kind]:
                raise ValueError(
                    f"{where}.transport: a {channel.kind} channel uses {expected[channel.kind]!r}"
                )
            if channel.transport == "smtp" and channel.smtp is None:
                raise ValueError(f"{where}.smtp: an smtp channel needs its server settings")
            if channel.transport == "provider":
                if not channel.providers:
                    raise ValueError(f"{where}.providers: at least one provider is needed")
                names = [p.name for p in channel.providers]
                if len(set(names)) != len(names):
                    raise ValueError(f"{where}.providers: provider names must differ")
                for n, provider in enumerate(channel.providers):
                    if not re.match(r"^https?://", provider.url):
                        raise ValueError(f"{where}.providers[{n}].url: an http(s) URL is needed")
                    if not provider.secret.startswith("whsec_"):
                        raise ValueError(
                            f"{where}.providers[{n}].secret: expected 'whsec_<base64>'"
                        )
            if channel.timeout <= timedelta(0):
                raise ValueError(f"{where}.timeout: must be positive")
            if channel.ordered:
                raise ValueError(f"{where}.ordered: only seen consumers can be ordered")
        for name, category in self.categories.items():
            for channel_name in category.defaults:
                if channel_name not in self.channels:
                    raise ValueError(
                        f"categories.{name}.defaults: no channel named {channel_name!r}"
                    )
        for name, event_type in self.event_types.items():
            where = f"event_types.{name}"
            if event_type.category not in self.categories:
                raise ValueError(f"{where}.category: no category named {event_type.category!r}")
            for channel_name in event_type.channels:
                if channel_name not in self.channels:
                    raise ValueError(f"{where}.channels: no channel named {channel_name!r}")
            if len(set(event_type.channels)) != len(event_type.channels):
                raise ValueError(f"{where}.channels: a channel is listed twice")
            if event_type.ttl <= timedelta(0):
                raise ValueError(f"{where}.ttl: must be positive")
            escalation = event_type.escalation
            if escalation is not None:
                if escalation.channel not in self.channels:
                    raise ValueError(
                        f"{where}.escalation.channel: no channel named {escalation.channel!r}"
                    )
                if escalation.channel in event_type.channels:
                    raise ValueError(
                        f"{where}.escalation.channel: {escalation.channel!r} is already one of "
                        "the type's channels"
                    )
                if escalation.after <= timedelta(0):
                    raise ValueError(f"{where}.escalation.after: must be positive")
        if self.event_types:
            tag = self.tags.get(self.notify.seen_tag)
            if tag is None or tag.event_type != "client":
                raise ValueError(
                    f"notify.seen_tag: {self.notify.seen_tag!r} must be a configured tag of "
                    "event_type 'client' (users mark notifications seen with it)"
                )


def _env_value(raw: str) -> Any:
    # Arrays, inline tables and quoted strings are read as TOML. Anything else stays text:
    # parsing converts text to a number or boolean where the key wants one, and a secret
    # such as "12345" must stay a string.
    if raw.lstrip()[:1] not in ("[", "{", '"', "'"):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay environment variables on the file's data (see the module docstring)."""
    for key, raw in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p for p in key[len(ENV_PREFIX) :].split("__") if p]
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment {key}: {part!r} is not a table")
        if path:
            node[path[-1]] = _env_value(raw)
    if url := environ.get("DATABASE_URL"):
        data.setdefault("database", {})["url"] = url
    if env := environ.get("MARK_NOTIFY_ENV"):
        data["environment"] = env
    return data


def parse_config(data: dict[str, Any], source: str) -> Config:
    # msgspec hides mapping keys in its error paths ("$.consumers[...]"); check the named
    # entries one by one first so the message names the consumer or tag.
    named: tuple[tuple[str, type[msgspec.Struct]], ...] = (
        ("consumers", Consumer),
        ("tags", Tag),
        ("channels", Channel),
        ("categories", Category),
        ("event_types", EventTypeSettings),
        ("schedules", ScheduleSettings),
    )
    for section, entry_type in named:
        entries = data.get(section)
        for name, entry in entries.items() if isinstance(entries, dict) else ():
            try:
                msgspec.convert(name, Name)
            except msgspec.ValidationError:
                raise ConfigError(
                    f"{source}: {section}.{name!r}: a name is 1-64 of a-z 0-9 _ . -, "
                    "starting with a letter or digit"
                ) from None
            try:
                msgspec.convert(entry, entry_type, strict=False)
            except msgspec.ValidationError as exc:
                message = str(exc).replace("`$", f"`$.{section}.{name}")
                if " - at `" not in message:
                    message += f" - at `$.{section}.{name}`"
                raise ConfigError(f"{source}: {message}") from None
    try:
        return msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    file = path or Path(env.get("MARK_NOTIFY_CONFIG", DEFAULT_CONFIG))
    try:
        data = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such config file (set MARK_NOTIFY_CONFIG)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    return parse_config(apply_env(data, env), str(file))
