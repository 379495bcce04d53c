"""Mailings: a manager's notification to many users, written, previewed, sent and watched.

A mailing is a draft until it is sent; sending makes it one event through the same intake
as POST /v1/events (notify_event(), producer `admin`, idempotency key `mailing:<id>`), so a
double click sends once and preferences, contacts, quiet hours and unsubscribe links
apply as to any event. Its progress is the event's status as GET /v1/events/{id} counts it
(the `event_status` query). Cancelling stops what has not gone out (cancel_event(),
sql/notify/functions/cancel_event.sql). The form and its checks are in mailing_forms.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
from psycopg.rows import dict_row
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.admin.mailing_forms import (
    ONE_OFF,
    TEXT_PARTS,
    Draft,
    FormError,
    data_fields,
    draft_of,
    eligible_types,
    form_values,
    locales_of,
    read_draft,
)
from service.admin.mailing_progress import PRODUCER, live_state, percent, progress_of
from service.admin.sessions import Session
from service.admin.web import action, page, pool_of, problem, record, redirect, refuse, render
from service.event_intake import IntakeRefused, accept_event
from service.sql import q
from service.state import state_of

LIST_LIMIT = 200
REFRESH_SECONDS = 2
LIST_REFRESH_SECONDS = 5
TOPIC_SUGGESTIONS = 200
_encode = msgspec.json.Encoder().encode


def _key(mailing_id: int) -> str:
    return f"mailing:{mailing_id}"


def _id(request: Request) -> int | None:
    raw: str = request.path_params["mailing_id"]
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


def audience_text(row: Mapping[str, Any]) -> str:
    if row["audience"] == "all":
        return "all users"
    if row["audience"] == "topic":
        return f"topic {row['topic']}"
    listed = row.get("listed")
    count = listed if listed is not None else len(row.get("user_ids") or [])
    return f"{count} listed users"


def _snapshot(draft: Draft) -> dict[str, Any]:
    """A draft for the audit log: what it says, not the whole id list."""
    shown = msgspec.to_builtins(draft)
    if draft.user_ids is not None:
        shown["user_ids"] = len(draft.user_ids)
    return dict(shown)


async def _get(request: Request, mailing_id: int) -> dict[str, Any] | None:
    async with pool_of(request).connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("admin_mailing_get"), {"id": mailing_id})
        return await cur.fetchone()


@page("manager")
async def list_mailings(request: Request, who: Session) -> Response:
    context = {"title": "Mailings", "refresh": LIST_REFRESH_SECONDS} | await _rows(request)
    return render(request, who, "mailings.html", context)


@page("manager")
async def list_live(request: Request, who: Session) -> Response:
    return render(request, who, "mailings_live.html", await _rows(request))


async def _rows(request: Request) -> dict[str, Any]:
    async with pool_of(request).connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("admin_mailings_list"), {"limit": LIST_LIMIT})
        rows = await cur.fetchall()
    for row in rows:
        row["audience_text"] = audience_text(row)
        row["percent"] = percent(row["event_status"], row["deliveries"], row["finished"])
    return {"rows": rows, "one_off": ONE_OFF}


async def _form(
    request: Request,
    who: Session,
    *,
    mailing_id: int | None,
    type_name: str,
    values: dict[str, Any],
    error: str | None = None,
    listed: int | None = None,
    status: int = 200,
) -> Response:
    state = state_of(request)
    config = state.config
    types = eligible_types(config)
    one_off = ONE_OFF in config.event_types
    if type_name not in types and not (one_off and type_name == ONE_OFF):
        type_name = ONE_OFF if one_off else (types[0] if types else "")
    if not type_name:
        return problem(request, who, 409, "No event type can be mailed in this configuration.")
    templates = state.templates.get(type_name)
    async with pool_of(request).connection() as conn:
        cur = await conn.execute(q("admin_topics"), {"limit": TOPIC_SUGGESTIONS})
        topics = [row[0] for row in await cur.fetchall()]
    context = {
        "title": "New mailing" if mailing_id is None else "Edit mailing",
        "error": error,
        "mailing_id": mailing_id,
        "type_name": type_name,
        "types": types,
        "one_off": ONE_OFF if one_off else None,
        "locales": locales_of(templates) if type_name == ONE_OFF else [],
        "parts": TEXT_PARTS,
        "fields": [] if type_name == ONE_OFF else data_fields(config, templates, type_name),
        "required": templates.required_data if templates else frozenset(),
        "v": values,
        "topics": topics,
        "listed": listed,
        "max_recipients": config.notify.max_recipients,
    }
    return render(request, who, "mailing_form.html", context, status=status)


@page("manager")
async def new_mailing(request: Request, who: Session) -> Response:
    type_name = request.query_params.get("type") or ONE_OFF
    return await _form(request, who, mailing_id=None, type_name=type_name, values=form_values(None))


@action("manager")
async def create_mailing(request: Request, who: Session, form: FormData) -> Response:
    state = state_of(request)
    try:
        draft = await read_draft(form, state.config, state.templates)
    except FormError as exc:
        return await _form(
            request,
            who,
            mailing_id=None,
            type_name=str(form.get("event_type") or ""),
            values=form_values(None, form),
            error=" ".join(exc.problems),
            status=400,
        )
    async with pool_of(request).connection() as conn, conn.transaction():
        cur = await conn.execute(
            q("admin_mailing_insert"), _row_params(draft) | {"created_by": who.username}
        )
        row = await cur.fetchone()
        assert row is not None
        mailing_id = int(row[0])
        await record(conn, request, who, "mailing.create", _key(mailing_id), after=_snapshot(draft))
    return redirect(f"/admin/mailings/{mailing_id}")


def _row_params(draft: Draft) -> dict[str, Any]:
    return {
        "name": draft.name,
        "event_type": draft.event_type,
        "content": None if draft.content is None else _encode(draft.content).decode(),
        "data": _encode(draft.data).decode(),
        "audience": draft.audience,
        "topic": draft.topic,
        "user_ids": draft.user_ids,
        "send_at": draft.send_at,
    }


@page("manager")
async def edit_mailing(request: Request, who: Session) -> Response:
    mailing_id = _id(request)
    row = await _get(request, mailing_id) if mailing_id is not None else None
    if row is None or mailing_id is None:
        return problem(request, who, 404, "No such mailing.")
    if row["status"] != "draft":
        return problem(
            request, who, 409, f"This mailing was {row['status']}: it can no longer change."
        )
    draft = draft_of(row)
    return await _form(
        request,
        who,
        mailing_id=mailing_id,
        type_name=request.query_params.get("type") or draft.event_type,
        values=form_values(draft),
        listed=len(draft.user_ids) if draft.user_ids is not None else None,
    )


@action("manager")
async def update_mailing(request: Request, who: Session, form: FormData) -> Response:
    mailing_id = _id(request)
    if mailing_id is None:
        return await refuse(request, who, 404, "No such mailing.")
    state = state_of(request)
    async with pool_of(request).connection() as conn, conn.transaction():
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("admin_mailing_lock"), {"id": mailing_id})
        row = await cur.fetchone()
        if row is None:
            return await refuse(request, who, 404, "No such mailing.")
        if row["status"] != "draft":
            return await refuse(
                request, who, 409, f"This mailing was {row['status']}: it can no longer change."
            )
        before = draft_of(row)
        try:
            draft = await read_draft(form, state.config, state.templates, before.user_ids)
        except FormError as exc:
            return await _form(
                request,
                who,
                mailing_id=mailing_id,
                type_name=str(form.get("event_type") or ""),
                values=form_values(None, form),
                error=" ".join(exc.problems),
                listed=len(before.user_ids) if before.user_ids is not None else None,
                status=400,
            )
        await conn.execute(q("admin_mailing_update"), _row_params(draft) | {"id": mailing_id})
        await record(
            conn,
            request,
            who,
            "mailing.update",
            _key(mailing_id),
            before=_snapshot(before),
            after=_snapshot(draft),
        )
    return redirect(f"/admin/mailings/{mailing_id}")


@page("manager")
async def show_mailing(request: Request, who: Session) -> Response:
    mailing_id = _id(request)
    row = await _get(request, mailing_id) if mailing_id is not None else None
    if row is None:
        return problem(request, who, 404, "No such mailing.")
    return await _detail(request, who, row)


async def _detail(
    request: Request,
    who: Session,
    row: Mapping[str, Any],
    *,
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    state = state_of(request)
    draft = draft_of(row)
    size = None
    if row["status"] == "draft":
        async with pool_of(request).connection() as conn:
            cur = await conn.execute(
                q("admin_audience_size"), {"recipients": _encode(draft.recipients()).decode()}
            )
            counted = await cur.fetchone()
            size = int(counted[0]) if counted else 0
    progress = await progress_of(request, row)
    live, cancellable = live_state(row, progress)
    templates = state.templates.get(draft.event_type)
    context = {
        "title": f"Mailing: {row['name']}",
        "notice": notice or _DONE.get(request.query_params.get("done", "")),
        "error": error,
        "m": row,
        "draft": draft,
        "one_off": draft.event_type == ONE_OFF,
        "audience_text": audience_text(row),
        "listed": len(draft.user_ids) if draft.user_ids is not None else None,
        "size": size,
        "progress": progress,
        "live": live,
        "refresh": REFRESH_SECONDS,
        "cancellable": cancellable,
        "locales": locales_of(templates),
        "parts": TEXT_PARTS,
        "scheduled": draft.send_at is not None and draft.send_at > datetime.now(UTC),
    }
    return render(request, who, "mailing.html", context, status=status)


_DONE = {
    "sent": "Sent: the mailing is on its way.",
    "scheduled": "Scheduled: the mailing goes out at its send time.",
    "cancelled": "Cancelled: nothing more of it goes out.",
}


@page("manager")
async def mailing_progress(request: Request, who: Session) -> Response:
    mailing_id = _id(request)
    row = await _get(request, mailing_id) if mailing_id is not None else None
    if row is None:
        return problem(request, who, 404, "No such mailing.")
    progress = await progress_of(request, row)
    live, cancellable = live_state(row, progress)
    context = {"progress": progress, "m": row, "live": live, "cancellable": cancellable}
    return render(request, who, "mailing_progress.html", context)


@action("manager")
async def send_mailing(request: Request, who: Session, form: FormData) -> Response:
    mailing_id = _id(request)
    if mailing_id is None:
        return await refuse(request, who, 404, "No such mailing.")
    state = state_of(request)
    if not state.catalog_synced:
        return problem(request, who, 503, "The database is not ready yet; try again shortly.")
    notify = state.config.notify
    try:
        async with pool_of(request).connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(q("admin_mailing_lock"), {"id": mailing_id})
            row = await cur.fetchone()
            if row is None:
                return await refuse(request, who, 404, "No such mailing.")
            if row["status"] != "draft":
                # A second click, or a reload of the POST: the first one sent it.
                return redirect(f"/admin/mailings/{mailing_id}")
            draft = draft_of(row)
            send_at = draft.send_at if draft.send_at and draft.send_at > datetime.now(UTC) else None
            accepted = await accept_event(
                conn,
                producer=PRODUCER,
                idempotency_key=_key(mailing_id),
                type_name=draft.event_type,
                recipients=_encode(draft.recipients()).decode(),
                data=_encode(draft.event_data()).decode(),
                send_at=send_at,
                chunk=notify.chunk_size,
            )
            event_id, event_status, created = accepted.id, accepted.status, accepted.created
            await conn.execute(q("admin_mailing_sent"), {"id": mailing_id, "event_id": event_id})
            await record(
                conn,
                request,
                who,
                "mailing.send",
                _key(mailing_id),
                before={"status": "draft"},
                after={
                    "status": "sent",
                    "event_id": event_id,
                    "event_status": event_status,
                    "created": created,
                    "send_at": send_at,
                },
            )
    except IntakeRefused as exc:
        # notify_event() refused it (the type or its data no longer fit the configuration):
        # nothing was written.
        row = await _get(request, mailing_id)
        assert row is not None
        return await _detail(request, who, row, error=f"Not sent: {exc.message}.", status=400)
    done = "scheduled" if send_at else "sent"
    return redirect(f"/admin/mailings/{mailing_id}?done={done}")


@action("manager")
async def cancel_mailing(request: Request, who: Session, form: FormData) -> Response:
    mailing_id = _id(request)
    if mailing_id is None:
        return await refuse(request, who, 404, "No such mailing.")
    async with pool_of(request).connection() as conn:
        async with conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(q("admin_mailing_lock"), {"id": mailing_id})
            row = await cur.fetchone()
            if row is None:
                return await refuse(request, who, 404, "No such mailing.")
            if row["status"] == "cancelled":
                return redirect(f"/admin/mailings/{mailing_id}")
            after: dict[str, Any] = {"status": "cancelled"}
            if row["event_id"] is not None:
                await cur.execute(q("admin_cancel_event"), {"event_id": row["event_id"]})
                stopped = await cur.fetchone()
                if stopped and stopped["previous"] == "done" and stopped["suppressed"] == 0:
                    # cancel_event() changed nothing: the mailing stays sent.
                    fresh = await _get(request, mailing_id)
                    assert fresh is not None
                    late = "Nothing to cancel: every delivery has gone out already."
                    return await _detail(request, who, fresh, error=late, status=409)
                if stopped:
                    after |= {
                        "event_status_before": stopped["previous"],
                        "suppressed": stopped["suppressed"],
                        "job_removed": stopped["job_removed"],
                    }
            await conn.execute(q("admin_mailing_cancelled"), {"id": mailing_id})
            await record(
                conn,
                request,
                who,
                "mailing.cancel",
                _key(mailing_id),
                before={"status": row["status"]},
                after=after,
            )
    return redirect(f"/admin/mailings/{mailing_id}?done=cancelled")


ROUTES = [
    Route("/mailings", list_mailings, methods=["GET"]),
    Route("/mailings", create_mailing, methods=["POST"]),
    Route("/mailings/new", new_mailing, methods=["GET"]),
    Route("/mailings/live", list_live, methods=["GET"]),
    Route("/mailings/{mailing_id}", show_mailing, methods=["GET"]),
    Route("/mailings/{mailing_id}", update_mailing, methods=["POST"]),
    Route("/mailings/{mailing_id}/edit", edit_mailing, methods=["GET"]),
    Route("/mailings/{mailing_id}/progress", mailing_progress, methods=["GET"]),
    Route("/mailings/{mailing_id}/send", send_mailing, methods=["POST"]),
    Route("/mailings/{mailing_id}/cancel", cancel_mailing, methods=["POST"]),
]
