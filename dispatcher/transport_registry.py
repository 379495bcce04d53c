"""Which transport delivers for which outbox destination.

Seen consumers go over HTTP or Kafka; notification channels over SMTP, HTTP providers
(SMS, push), browsers' push services (Web Push) or the inbox. One transport instance
serves every destination of its kind. Modules are imported only when a destination uses
them (aiokafka and aiosmtplib are heavy, and most dispatchers need few of them).
"""

from __future__ import annotations

from collections.abc import Mapping

from dispatcher.transport_base import Transport
from service.config.load import Config
from service.config.notify import Channel
from service.config.seen import Consumer
from service.notify.templates import TypeTemplates, load_templates


def consumer_transports(config: Config) -> dict[str, Transport]:
    enabled = {n: c for n, c in config.consumers.items() if c.enabled}
    transports: dict[str, Transport] = {}
    http = {n: c for n, c in enabled.items() if c.transport == "http"}
    if http:
        from dispatcher.http_transport import HttpTransport

        shared: Transport = HttpTransport(http)
        transports |= dict.fromkeys(http, shared)
    kafka = {n: c for n, c in enabled.items() if c.transport == "kafka"}
    if kafka:
        from dispatcher.kafka_transport import KafkaTransport

        shared = KafkaTransport(config.kafka, kafka)
        transports |= dict.fromkeys(kafka, shared)
    return transports


def channel_transports(
    config: Config, templates: Mapping[str, TypeTemplates] | None = None
) -> dict[str, Transport]:
    enabled = {n: c for n, c in config.channels.items() if c.enabled}
    if not enabled:
        return {}
    compiled = templates if templates is not None else load_templates(config)
    transports: dict[str, Transport] = {}
    by_transport: dict[str, dict[str, Channel]] = {}
    for name, channel in enabled.items():
        by_transport.setdefault(channel.transport, {})[name] = channel
    if smtp := by_transport.get("smtp"):
        from dispatcher.smtp_transport import SmtpTransport

        shared: Transport = SmtpTransport(
            smtp, config.notify, compiled, environment=config.environment
        )
        transports |= dict.fromkeys(smtp, shared)
    if providers := by_transport.get("provider"):
        from dispatcher.provider_transport import ProviderTransport

        shared = ProviderTransport(providers, compiled)
        transports |= dict.fromkeys(providers, shared)
    if (browsers := by_transport.get("webpush")) and config.notify.webpush is not None:
        from dispatcher.webpush_transport import WebPushTransport

        shared = WebPushTransport(browsers, compiled, config.notify.webpush, config.event_types)
        transports |= dict.fromkeys(browsers, shared)
    if inbox := by_transport.get("inbox"):
        from dispatcher.inbox_transport import InboxTransport

        shared = InboxTransport()
        transports |= dict.fromkeys(inbox, shared)
    return transports


def build_transports(
    config: Config, templates: Mapping[str, TypeTemplates] | None = None
) -> dict[str, Transport]:
    """The transport of every enabled consumer and channel, by destination name."""
    return consumer_transports(config) | channel_transports(config, templates)


def destinations(config: Config) -> dict[str, Consumer | Channel]:
    """Every outbox destination this config delivers to, with its delivery policy."""
    found: dict[str, Consumer | Channel] = {}
    found.update(config.consumers)
    found.update(config.channels)
    return found
