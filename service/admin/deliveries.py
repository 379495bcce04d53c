"""Deliveries: browse outbox rows and their attempts, and redeliver dead letters.

The list is keyset-paginated on the outbox id (`?before=<id>`, newest first), so a page
costs the same on the millionth row as on the first (sql/admin/queries/deliveries.sql).
Redelivery is service/ops/redeliver.py's, the code path of bin/redeliver: its selection
counts and lists what "redeliver all matching" takes, and its requeue writes the one
audit row of the action, with the admin as the actor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import msgspec
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.admin.sessions import Session
from service.admin.web import (
    action,
    client_ip,
    page,
    pool_of,
    problem,
    redirect,
    refuse,
    render,
)
from service.config.load import Config
from service.ops import redeliver
from service.sql import q
from service.state import state_of

PAGE_SIZE = 50
REFRESH_SECONDS = 5
# A "Requeued" notice follows its rows this long; a link older than that shows none.
NOTICE_FOR = timedelta(hours=1)
# "Redeliver all matching" counts its rows before asking; past this it says "more than".
COUNT_CAP = 10_000
# Dead letters ticked on one page; a page shows PAGE_SIZE, so this is only a bound.
MAX_SELECTED = 500
STATUSES: dict[str, tuple[str, ...]] = {
    "pending": ("pending",),
    "delivered": ("delivered",),
    "failed": ("failed",),
    "dead": ("dead",),
    "suppressed": ("suppressed",),
    "dead_letters": ("failed", "dead"),
}
STATUS_LABELS = {
    "": "any",
    "dead_letters": "dead letters (failed + dead)",
    "pending": "pending",
    "delivered": "delivered",
    "failed": "failed (refused)",
    "dead": "dead (retries ran out)",
    "suppressed": "suppressed",
}
DEAD_LETTERS: tuple[redeliver.Status, ...] = ("failed", "dead")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
# Where a redeliver form may send the admin back to: this page or a row's page.
_BACK = re.compile(r"^/admin/deliveries(/[0-9]+)?(\?[^#\\]*)?$")


def _text(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    return value.strip() if isinstance(value, str) else ""


def _moment(raw: str) -> datetime:
    # <input type=datetime-local> sends no zone; the page shows and means UTC.
    value = datetime.fromisoformat(raw)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass(frozen=True)
class Filter:
    """The list's filters, as the form and the URL carry them."""

    consumer: str = ""
    # "tag:<name>" (seen marks) or "type:<name>" (notifications' event types).
    what: str = ""
    status: str = ""
    subject: str = ""
    since_raw: str = ""
    until_raw: str = ""
    # One event's (its id), one webhook's (the webhook-id) or one notification's rows.
    event: str = ""
    webhook: str = ""
    notification: str = ""
    since: datetime | None = None
    until: datetime | None = None
    errors: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Filter:
        errors: list[str] = []
        status = _text(params, "status")
        if status and status not in STATUSES:
            errors.append(f"Unknown status {status!r}: shown for any status.")
            status = ""
        what = _text(params, "what")
        if what and not what.startswith(("tag:", "type:")):
            errors.append("Unknown tag or event type: shown for all.")
            what = ""
        moments: dict[str, datetime | None] = {}
        for name, label in (("from", "From"), ("to", "To")):
            raw = _text(params, name)
            try:
                moments[name] = _moment(raw) if raw else None
            except ValueError:
                errors.append(f"{label}: {raw!r} is not a date and time.")
                moments[name] = None
        ids = {name: _text(params, name) for name in ("event", "webhook", "notification")}
        for name in ("event", "webhook"):
            if ids[name] and not _UUID.match(ids[name]):
                errors.append(f"{ids[name]!r} is not an {name} id: shown for any {name}.")
                ids[name] = ""
        notification = ids["notification"]
        if notification and not (
            notification.isascii() and notification.isdigit() and len(notification) <= 18
        ):
            errors.append(f"{ids['notification']!r} is not a notification id.")
            ids["notification"] = ""
        return cls(
            consumer=_text(params, "consumer"),
            event=ids["event"].lower(),
            webhook=ids["webhook"].lower(),
            notification=ids["notification"],
            what=what,
            status=status,
            subject=_text(params, "subject"),
            since_raw=_text(params, "from") if moments["from"] else "",
            until_raw=_text(params, "to") if moments["to"] else "",
            since=moments["from"],
            until=moments["to"],
            errors=tuple(errors),
        )

    @property
    def tag(self) -> str | None:
        return self.what.removeprefix("tag:") if self.what.startswith("tag:") else None

    @property
    def event_type(self) -> str | None:
        return self.what.removeprefix("type:") if self.what.startswith("type:") else None

    def fields(self) -> dict[str, str]:
        """The filter as form fields (only those set): for links and hidden inputs."""
        pairs = {
            "consumer": self.consumer,
            "what": self.what,
            "status": self.status,
            "subject": self.subject,
            "from": self.since_raw,
            "to": self.until_raw,
            "event": self.event,
            "webhook": self.webhook,
            "notification": self.notification,
        }
        return {k: v for k, v in pairs.items() if v}

    def query(self, **extra: str | int) -> str:
        return urlencode(self.fields() | {k: str(v) for k, v in extra.items()})

    def params(self, before: int | None, limit: int) -> dict[str, object]:
        return {
            "before": before,
            "consumers": [self.consumer] if self.consumer else None,
            "statuses": list(STATUSES[self.status]) if self.status else None,
            "tag": self.tag,
            "event_type": self.event_type,
            "subject": self.subject or None,
            "since": self.since,
            "until": self.until,
            "event": self.event or None,
            "webhook": self.webhook or None,
            "notification": int(self.notification) if self.notification else None,
            "limit": limit,
        }

    def redeliverable(self) -> redeliver.RedeliverFilter | None:
        """The same selection in bin/redeliver's terms, if it has them: only under a
        dead-letter status filter (an unfiltered list never offers to requeue every
        consumer's dead letters at once), and no subject (the shared selection has none)."""
        if self.event or self.webhook or self.notification:
            return None
        if self.subject or self.status not in ("dead_letters", "failed", "dead"):
            return None
        statuses = DEAD_LETTERS
        if self.status == "failed":
            statuses = ("failed",)
        elif self.status == "dead":
            statuses = ("dead",)
        return redeliver.RedeliverFilter(
            consumers=(self.consumer,) if self.consumer else None,
            tags=(self.tag,) if self.tag else None,
            event_types=(self.event_type,) if self.event_type else None,
            since=self.since,
            until=self.until,
            statuses=statuses,
        )


def _choices(config: Config, current: Filter) -> dict[str, Any]:
    """The select boxes' options, from the config as loaded; a value from the URL that
    the config does not name (a consumer removed since) is kept as an option."""
    consumers = sorted(config.consumers)
    channels = sorted(config.channels)
    tags = sorted(config.tags)
    types = sorted(config.event_types)
    extra_consumer = (
        current.consumer
        if current.consumer and current.consumer not in consumers + channels
        else None
    )
    known_what = [f"tag:{t}" for t in tags] + [f"type:{t}" for t in types]
    extra_what = current.what if current.what and current.what not in known_what else None
    return {
        "consumers": consumers,
        "channels": channels,
        "tags": tags,
        "event_types": types,
        "extra_consumer": extra_consumer,
        "extra_what": extra_what,
        "statuses": STATUS_LABELS,
    }


def _requeued_at(params: Mapping[str, Any]) -> datetime | None:
    """When the requeue the notice speaks of was made, if recent enough to follow."""
    try:
        at = datetime.fromisoformat(_text(params, "at"))
    except ValueError:
        return None
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at if datetime.now(UTC) - at < NOTICE_FOR else None


async def _notice(
    conn: AsyncConnection[Any],
    params: Mapping[str, Any],
    ids: list[int] | None = None,
    *,
    live: bool = False,
) -> tuple[str | None, str | None]:
    """The notice after a redelivery, while it has news: how many of the requeued rows are
    still pending, or failed again. Once all are delivered the page says so as it opens
    (the answer to the press), and the live refresh drops the notice."""
    done = _text(params, "done")
    try:
        count = int(_text(params, "n") or "0")
    except ValueError:
        count = 0
    rows = "row" if count == 1 else "rows"
    if done == "requeued":
        if not count:
            return None, "Nothing was requeued: those rows are no longer dead letters."
        since = _requeued_at(params)
        if since is None:
            return None, None
        cur = await conn.execute(q("admin_requeued_since"), {"since": since, "ids": ids})
        pending, delivered, failed = await cur.fetchone() or (0, 0, 0)
        if not pending and not failed:
            return (None if live else f"Requeued {count} {rows}: all delivered."), None
        parts = [f"{pending} still pending"]
        parts += [f"{delivered} delivered"] if delivered else []
        parts += [f"{failed} failed again"] if failed else []
        return f"Requeued {count} {rows}: " + ", ".join(parts) + ".", None
    if done == "none":
        return None, "Tick at least one dead letter first."
    return None, None


def _dead_letters(count: int | None) -> str:
    if count is None:
        return ""
    if count > COUNT_CAP:
        return f"more than {COUNT_CAP:,} dead letters"
    return f"{count:,} dead letter" + ("" if count == 1 else "s")


def _before(params: Mapping[str, Any]) -> int | None:
    raw = _text(params, "before")
    return int(raw) if raw.isdigit() else None


@page("manager")
async def deliveries(request: Request, who: Session) -> Response:
    return render(request, who, "deliveries.html", await _list(request, who))


@page("manager")
async def deliveries_live(request: Request, who: Session) -> Response:
    return render(request, who, "deliveries_live.html", await _list(request, who))


async def _list(request: Request, who: Session) -> dict[str, Any]:
    flt = Filter.parse(request.query_params)
    before = _before(request.query_params)
    shared = flt.redeliverable() if who.role == "operator" else None
    async with pool_of(request).connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("admin_deliveries_page"), flt.params(before, PAGE_SIZE + 1))
        rows = await cur.fetchall()
        matching = None
        per_consumer: dict[str, int] = {}
        if shared is not None:
            found = await redeliver.candidates(conn, shared, limit=COUNT_CAP + 1)
            matching = len(found)
            for candidate in found:
                per_consumer[candidate.consumer] = per_consumer.get(candidate.consumer, 0) + 1
        live = request.url.path.endswith("/live")
        notice, error = await _notice(conn, request.query_params, live=live)
    older = rows[PAGE_SIZE - 1]["id"] if len(rows) > PAGE_SIZE else None
    errors = [*flt.errors, *([error] if error else [])]
    context = {
        "title": "Deliveries",
        "rows": rows[:PAGE_SIZE],
        "flt": flt,
        "choices": _choices(state_of(request).config, flt),
        "before": before,
        "older_url": f"/admin/deliveries?{flt.query(before=older)}" if older else None,
        "first_url": f"/admin/deliveries?{flt.query()}" if before else None,
        "back": f"/admin/deliveries?{flt.query()}",
        "matching": matching,
        "matching_label": _dead_letters(matching),
        "matching_consumers": ", ".join(f"{n}: {c:,}" for n, c in sorted(per_consumer.items())),
        "dead_letters": DEAD_LETTERS,
        # In the live part, not the page's head: it changes as the rows are delivered.
        "requeue_notice": notice,
        "error": " ".join(errors) or None,
        # Page one follows new rows and states; older pages stay as they were.
        "live_url": None if before else f"/admin/deliveries/live?{request.url.query}",
        "every": REFRESH_SECONDS,
    }
    return context


def _pretty(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


@page("manager")
async def delivery(request: Request, who: Session) -> Response:
    raw = request.path_params["id"]
    if not raw.isdigit():
        return problem(request, who, 404, "There is no delivery with that id.")
    async with pool_of(request).connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("admin_delivery_row"), {"id": int(raw)})
        row = await cur.fetchone()
        await cur.execute(q("admin_delivery_attempts"), {"id": int(raw)})
        attempts = await cur.fetchall()
        notice, error = await _notice(conn, request.query_params, [int(raw)])
    if row is None:
        return problem(request, who, 404, f"There is no delivery {raw} (pruned, or never made).")
    config = state_of(request).config
    if row["consumer"] in config.channels:
        kind = "notification channel"
    elif row["consumer"] in config.consumers:
        kind = "seen-mark consumer"
    else:
        kind = "not configured"
    context = {
        "title": f"Delivery {row['id']}",
        "row": row,
        "consumer_kind": kind,
        "payload": _pretty(row["payload"]),
        "attempts": attempts,
        "dead_letters": DEAD_LETTERS,
        "back": f"/admin/deliveries/{row['id']}",
        "notice": notice,
        "error": error,
    }
    return render(request, who, "delivery.html", context)


def _back(form: FormData, **done: str | int) -> str:
    back = _text(form, "back")
    if not _BACK.match(back):
        back = "/admin/deliveries"
    return back + ("&" if "?" in back else "?") + urlencode(done)


@action("operator")
async def redeliver_selected(request: Request, who: Session, form: FormData) -> Response:
    ids = sorted({int(v) for v in form.getlist("ids") if isinstance(v, str) and v.isdigit()})
    if not ids:
        return redirect(_back(form, done="none"))
    if len(ids) > MAX_SELECTED:
        return await refuse(
            request,
            who,
            400,
            f"Select at most {MAX_SELECTED} rows at a time.",
            f"more than {MAX_SELECTED} rows ticked",
        )
    at = datetime.now(UTC).isoformat()
    async with pool_of(request).connection() as conn:
        done = await redeliver.requeue(
            conn,
            ids,
            who.username or "?",
            statuses=DEAD_LETTERS,
            client_ip=client_ip(request),
        )
    return redirect(_back(form, done="requeued", n=done.total, at=at))


@action("operator")
async def redeliver_matching(request: Request, who: Session, form: FormData) -> Response:
    flt = Filter.parse(form)
    shared = flt.redeliverable()
    if flt.errors or shared is None:
        return await refuse(
            request,
            who,
            400,
            "Redeliver all matching needs the list filtered to dead letters (status failed, "
            "dead or dead letters) and no subject filter: filter first, or tick the rows.",
            "bulk redeliver without a dead-letter filter",
        )
    at = datetime.now(UTC).isoformat()
    async with pool_of(request).connection() as conn:
        ids = [c.id for c in await redeliver.candidates(conn, shared)]
        if not ids:
            return redirect(f"/admin/deliveries?{flt.query(done='requeued', n=0)}")
        done = await redeliver.requeue(
            conn,
            ids,
            who.username or "?",
            statuses=shared.statuses,
            chosen_by=shared,
            client_ip=client_ip(request),
        )
    return redirect(f"/admin/deliveries?{flt.query(done='requeued', n=done.total, at=at)}")


ROUTES = [
    Route("/deliveries", deliveries, methods=["GET"]),
    Route("/deliveries/live", deliveries_live, methods=["GET"]),
    Route("/deliveries/redeliver", redeliver_selected, methods=["POST"]),
    Route("/deliveries/redeliver-all", redeliver_matching, methods=["POST"]),
    Route("/deliveries/{id}", delivery, methods=["GET"]),
]
