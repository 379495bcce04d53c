"""The dashboard: traffic, deliveries, backlog and dead letters at a glance.

The page is a frame around one fragment (/admin/dashboard/live) that admin.js fetches
again every REFRESH_SECONDS, so the numbers move without a reload. Every query behind it
is bounded by an index (sql/admin/queries/dashboard.sql): the last hour of marks, events
and attempts, the pending rows and the dead letters, never the whole history.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.admin.charts import OUTCOME_COLOURS, Series, stacked_bars, time_series
from service.admin.health import health_rows, lag_word
from service.admin.sessions import Session
from service.admin.web import page, pool_of, render
from service.sql import q
from service.state import state_of

REFRESH_SECONDS = 5
OUTCOMES = ("delivered", "retry", "failed", "dead")
OUTBOX_STATES = ("pending", "failed", "dead")


# A bar segment's outcome or state as the deliveries list's status filter: an attempt to
# be retried belongs to a row still pending.
STATUS_OF = {
    "delivered": "delivered",
    "retry": "pending",
    "pending": "pending",
    "failed": "failed",
    "dead": "dead",
}


def deliveries_url(consumer: str, key: str | None) -> str:
    """The deliveries a dashboard bar (key None) or segment counts."""
    query = {"consumer": consumer} | ({"status": STATUS_OF[key]} if key in STATUS_OF else {})
    return f"/admin/deliveries?{urlencode(query)}"


def _kind(name: str, channels: Any, consumers: Any) -> str:
    # Seen consumers and notification channels share the outbox and its attempts; the
    # dashboard says which is which, since their names may not.
    if name in channels:
        return "channel"
    if name in consumers:
        return "consumer"
    return "not configured"


async def _numbers(request: Request) -> dict[str, Any]:
    config = state_of(request).config
    async with pool_of(request).connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("admin_dashboard_per_minute"))
        minutes = await cur.fetchall()
        await cur.execute(q("admin_dashboard_deliveries"))
        attempts = await cur.fetchall()
        await cur.execute(q("admin_outbox_backlog"))
        outbox = await cur.fetchall()
        health = await health_rows(conn, config)

    labels = [m["minute"].astimezone(UTC).strftime("%H:%M") for m in minutes]
    marks = [int(m["marks"]) for m in minutes]
    events = [int(m["events"]) for m in minutes]
    traffic = time_series(
        "Seen marks and events per minute, last 60 minutes (UTC)",
        labels,
        [Series("seen marks", marks), Series("events", events)],
    )

    per_consumer: dict[str, dict[str, float]] = defaultdict(dict)
    for row in attempts:
        per_consumer[row["consumer"]][row["outcome"]] = int(row["attempts"])
    names = sorted(per_consumer)
    delivery_rows = [
        (f"{name} ({_kind(name, config.channels, config.consumers)})", per_consumer[name])
        for name in names
    ]
    deliveries = stacked_bars(
        "Delivery attempts per consumer and channel by outcome, last hour",
        delivery_rows,
        OUTCOMES,
        OUTCOME_COLOURS,
        link=lambda n, key: deliveries_url(names[n], key),
        empty="No delivery attempts in the last hour",
    )

    now = datetime.now(UTC)
    backlog_rows = []
    for row in outbox:
        oldest = row["oldest_pending_at"]
        backlog_rows.append(
            row
            | {
                "kind": _kind(row["consumer"], config.channels, config.consumers),
                "oldest_age_s": (now - oldest).total_seconds() if oldest else None,
            }
        )
    backlog = stacked_bars(
        "Outbox rows waiting (pending) and dead letters (failed, dead) per consumer",
        [
            (f"{r['consumer']} ({r['kind']})", {k: float(r[k]) for k in OUTBOX_STATES})
            for r in backlog_rows
        ],
        OUTBOX_STATES,
        OUTCOME_COLOURS,
        link=lambda n, key: deliveries_url(backlog_rows[n]["consumer"], key),
        empty="Nothing waiting and no dead letters",
    )
    lags = [h.lag_s for h in health if h.lag_s is not None and h.word != "paused"]
    dead_letters = sum(int(r["failed"]) + int(r["dead"]) for r in backlog_rows)
    order = {"failing": 0, "degraded": 1, "paused": 2}
    attention = sorted(
        (r for h in health for r in h.reasons), key=lambda r: (order[r.severity], r.name)
    )
    oldest_all = min(
        (r["oldest_pending_at"] for r in backlog_rows if r["oldest_pending_at"]), default=None
    )
    return {
        "totals": {
            "marks": sum(marks),
            "events": sum(events),
            "attempts": sum(int(r["attempts"]) for r in attempts),
            "delivered": sum(int(r["attempts"]) for r in attempts if r["outcome"] == "delivered"),
            "failures": sum(
                int(r["attempts"]) for r in attempts if r["outcome"] in ("failed", "dead")
            ),
            "pending": sum(int(r["pending"]) for r in backlog_rows),
            "dead_letters": dead_letters,
            "oldest_pending_at": oldest_all,
            "lag_s": max(lags, default=None),
        },
        # The cards' words, by the rules of service/admin/health.py.
        "backlog_word": lag_word(max(lags, default=None)),
        "dead_word": "degraded" if dead_letters else "healthy",
        "health": health,
        "attention": attention,
        "traffic_chart": traffic,
        "deliveries_chart": deliveries,
        "backlog_chart": backlog,
        "backlog": backlog_rows,
        "updated_at": now,
    }


@page("manager")
async def dashboard(request: Request, who: Session) -> Response:
    context = {"title": "Dashboard", "every": REFRESH_SECONDS} | await _numbers(request)
    return render(request, who, "dashboard.html", context)


@page("manager")
async def live(request: Request, who: Session) -> Response:
    return render(request, who, "dashboard_live.html", await _numbers(request))


ROUTES = [
    Route("/", dashboard, methods=["GET"]),
    Route("/dashboard/live", live, methods=["GET"]),
]
