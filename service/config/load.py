"""Configuration: msgspec Structs parsed from a TOML file, overridden by the environment.
The whole (Config) and its loading are here; each section's types in a module beside it.

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
from typing import Any

import msgspec

from service import webpush
from service.config.admin import AdminSettings
from service.config.base import ROOT, ConfigError, Environment, Name, refuse_unsafe_secret
from service.config.core import (
    ApiSettings,
    DatabaseSettings,
    DispatcherSettings,
    IdentitySettings,
    KafkaSettings,
)
from service.config.notify import (
    KIND_TRANSPORT,
    Category,
    Channel,
    EventTypeSettings,
    NotifySettings,
)
from service.config.schedule import RetentionSettings, SchedulerSettings, ScheduleSettings
from service.config.seen import Consumer, Tag

DEFAULT_CONFIG = ROOT / "config" / "mark-notify.toml"
ENV_PREFIX = "MARK_NOTIFY__"


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

    def category_rules(self) -> dict[str, dict[str, Any]]:
        """Each category as the SQL rules read it (notify_preference_on()): whether it is
        transactional and its channels' defaults, in the configuration's order."""
        return {
            name: {"transactional": c.transactional, "defaults": c.defaults}
            for name, c in self.categories.items()
        }

    def preference_params(self) -> dict[str, Any]:
        """The parameters of the preference queries (sql/notify/queries/preferences.sql):
        the categories and every channel, which notify_effective_preferences() answers for."""
        return {
            "categories": msgspec.json.encode(self.category_rules()).decode(),
            "channels": list(self.channels),
        }

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
        for key in ("lease", "bucket_lease", "sweep_interval", "census_interval"):
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
        if self.notify.webpush is not None:
            found.append(
                ("notify.webpush.vapid_private_key", self.notify.webpush.vapid_private_key)
            )
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
            expected = KIND_TRANSPORT[channel.kind]
            if channel.transport != expected:
                raise ValueError(f"{where}.transport: a {channel.kind} channel uses {expected!r}")
            if channel.transport == "webpush" and self.notify.webpush is None:
                raise ValueError(f"{where}: a webpush channel needs [notify.webpush] (its keys)")
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
        self._check_webpush()
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

    def _check_webpush(self) -> None:
        settings = self.notify.webpush
        if settings is None:
            return
        try:
            webpush.private_key(settings.vapid_private_key)
        except ValueError as exc:
            raise ValueError(f"notify.webpush.vapid_private_key: {exc} (bin/vapid new)") from None
        try:
            webpush.check_subject(settings.vapid_subject)
        except ValueError as exc:
            raise ValueError(f"notify.webpush.vapid_subject: {exc}") from None
        for host in settings.endpoint_hosts:
            if not re.match(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?\Z", host):
                raise ValueError(f"notify.webpush.endpoint_hosts: {host!r} is not a host name")


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
