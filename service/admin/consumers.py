"""Consumers and channels: the routing as loaded, each one's health, and the operators'
switches (pause / resume, providers on / off).

The health table is a fragment (/admin/consumers/live) that admin.js fetches again every
REFRESH_SECONDS. The switches are service/ops/controls.py's, which write their audit rows in
the same transaction as the change; the dispatchers read the same tables at each claim.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.admin.health import health_rows
from service.admin.sessions import Session
from service.admin.web import action, client_ip, page, pool_of, redirect, refuse, render
from service.config.base import DeliveryPolicy
from service.config.load import Config
from service.errors import unknown_name
from service.ops import controls
from service.state import state_of

REFRESH_SECONDS = 5
MAX_REASON = 200
DONE = {
    "paused": "Paused {name}: its rows wait, pending, until it is resumed.",
    "resumed": "Resumed {name}: the dispatchers take its backlog now.",
    "enabled": "Switched on {name}: it takes its turn in the failover order again.",
    "disabled": "Switched off {name}: the channel fails over past it from the next batch.",
}


def _safe_url(url: str | None) -> str | None:
    # A URL may carry a password (user:pass@host) or a key in its query; the page shows
    # where deliveries go, never those.
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _retries(policy: DeliveryPolicy) -> str:
    """How long a row is retried before it is dead, in words."""
    limits = []
    if policy.max_attempts:
        limits.append(f"{policy.max_attempts} attempts")
    if policy.max_age:
        limits.append(_duration(policy.max_age))
    return "up to " + " or ".join(limits) if limits else "until delivered (no limit)"


def _duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:g} s"


async def _health(request: Request) -> dict[str, Any]:
    async with pool_of(request).connection() as conn:
        rows = await health_rows(conn, state_of(request).config)
    return {"health": rows, "updated_at": datetime.now(UTC)}


def _routing(config: Config, providers_off: set[tuple[str, str]]) -> dict[str, Any]:
    consumers = []
    for name, consumer in sorted(config.consumers.items()):
        tags = sorted(t for t, tag in config.tags.items() if tag.consumer == name)
        if consumer.transport == "kafka":
            topics = sorted(
                {consumer.topic}
                if consumer.topic
                else {config.kafka.topics[config.tags[t].event_type] for t in tags}
            )
            where = ", ".join(topics) or "—"
        else:
            where = _safe_url(consumer.url) or "—"
        consumers.append({"name": name, "c": consumer, "tags": tags, "where": where})
    channels = []
    for name, channel in sorted(config.channels.items()):
        smtp = f"{channel.smtp.host}:{channel.smtp.port}" if channel.smtp else None
        providers = [
            {
                "name": p.name,
                "url": _safe_url(p.url),
                "enabled": (name, p.name) not in providers_off,
            }
            for p in channel.providers
        ]
        types = [t for t, et in sorted(config.event_types.items()) if name in et.channels]
        types += [
            f"{t} (escalation)"
            for t, et in sorted(config.event_types.items())
            if et.escalation and et.escalation.channel == name
        ]
        channels.append(
            {"name": name, "c": channel, "smtp": smtp, "providers": providers, "types": types}
        )
    unrouted = sorted(t for t, tag in config.tags.items() if tag.consumer is None)
    return {"consumers": consumers, "channels": channels, "unrouted_tags": unrouted}


def _notice(request: Request, config: Config) -> str | None:
    template = DONE.get(request.query_params.get("done", ""))
    name = request.query_params.get("name", "")
    # Only names the config has: a crafted link cannot put words on the page.
    channel, _, provider = name.partition("/")
    known = name in config.consumers or name in config.channels
    if provider and channel in config.channels:
        known = provider in {p.name for p in config.channels[channel].providers}
    return template.format(name=name) if template and known else None


@page("manager")
async def consumers_page(request: Request, who: Session) -> Response:
    config = state_of(request).config
    async with pool_of(request).connection() as conn:
        providers_off = await controls.disabled_providers(conn)
        paused = await controls.consumer_controls(conn)
    context = {
        "title": "Consumers and channels",
        "every": REFRESH_SECONDS,
        "controls": paused,
        "duration": _duration,
        "retries": _retries,
        "notice": _notice(request, config),
    }
    context |= _routing(config, providers_off) | await _health(request)
    return render(request, who, "consumers.html", context)


@page("manager")
async def live(request: Request, who: Session) -> Response:
    return render(request, who, "consumers_live.html", await _health(request))


def _known(request: Request, name: str) -> bool:
    config = state_of(request).config
    return name in config.consumers or name in config.channels


def _reason(form: FormData) -> str | None:
    value = form.get("reason")
    text = value.strip()[:MAX_REASON] if isinstance(value, str) else ""
    return text or None


async def _switch(request: Request, who: Session, form: FormData, pause: bool) -> Response:
    name = request.path_params["name"]
    if not _known(request, name):
        config = state_of(request).config
        known = [*config.consumers, *config.channels]
        return await refuse(
            request, who, 404, f"There is {unknown_name('consumer or channel', name, known)}."
        )
    change = controls.pause if pause else controls.resume
    async with pool_of(request).connection() as conn:
        await change(conn, name, who.username or "?", _reason(form), client_ip=client_ip(request))
    verb = "paused" if pause else "resumed"
    return redirect(f"/admin/consumers?done={verb}&name={name}#{_anchor(name)}")


def _anchor(name: str) -> str:
    return f"c-{name}"


@action("operator")
async def pause(request: Request, who: Session, form: FormData) -> Response:
    return await _switch(request, who, form, True)


@action("operator")
async def resume(request: Request, who: Session, form: FormData) -> Response:
    return await _switch(request, who, form, False)


async def _provider(request: Request, who: Session, enabled: bool) -> Response:
    channel_name = request.path_params["name"]
    provider = request.path_params["provider"]
    channel = state_of(request).config.channels.get(channel_name)
    if channel is None:
        channels = state_of(request).config.channels
        return await refuse(
            request, who, 404, f"There is {unknown_name('channel', channel_name, channels)}."
        )
    if provider not in {p.name for p in channel.providers}:
        names = [p.name for p in channel.providers]
        return await refuse(
            request,
            who,
            404,
            f"Channel {channel_name!r} has {unknown_name('provider', provider, names)}.",
        )
    async with pool_of(request).connection() as conn:
        await controls.set_provider(
            conn, channel_name, provider, enabled, who.username or "?", client_ip=client_ip(request)
        )
    verb = "enabled" if enabled else "disabled"
    return redirect(
        f"/admin/consumers?done={verb}&name={channel_name}/{provider}#{_anchor(channel_name)}"
    )


@action("operator")
async def enable_provider(request: Request, who: Session, form: FormData) -> Response:
    return await _provider(request, who, True)


@action("operator")
async def disable_provider(request: Request, who: Session, form: FormData) -> Response:
    return await _provider(request, who, False)


ROUTES = [
    Route("/consumers", consumers_page, methods=["GET"]),
    Route("/consumers/live", live, methods=["GET"]),
    Route("/consumers/{name}/pause", pause, methods=["POST"]),
    Route("/consumers/{name}/resume", resume, methods=["POST"]),
    Route("/consumers/{name}/providers/{provider}/enable", enable_provider, methods=["POST"]),
    Route("/consumers/{name}/providers/{provider}/disable", disable_provider, methods=["POST"]),
]
