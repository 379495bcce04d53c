"""The audit log page: every admin action and ops command, newest first.

Each row's before and after are folded into what changed (the keys whose values differ,
old → new), so that a row stays a line or two tall; the whole JSON is one click away.
"""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.admin.sessions import Session
from service.admin.web import page, pool_of, render
from service.sql import q

SHOWN = 80  # characters of one value in the diff; the whole is in the JSON below it
_encode = msgspec.json.Encoder(order="sorted").encode


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    text = value if isinstance(value, str) else _encode(value).decode()
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def changes(before: Any, after: Any) -> list[tuple[str, str, str]]:
    """What an action changed, as (key, old, new): the keys of two objects whose values
    differ, or the whole values when either is not an object ("" as the key)."""
    if before is None and after is None:
        return []
    if isinstance(before, dict) or isinstance(after, dict):
        old = before if isinstance(before, dict) else {}
        new = after if isinstance(after, dict) else {}
        if (before is None or isinstance(before, dict)) and (
            after is None or isinstance(after, dict)
        ):
            keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            return [(k, _shown(old.get(k)), _shown(new.get(k))) for k in keys]
    return [("", _shown(before), _shown(after))] if before != after else []


@page("manager")
async def audit_log(request: Request, who: Session) -> Response:
    actor = request.query_params.get("actor") or None
    action_name = request.query_params.get("action") or None
    async with pool_of(request).connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("list_audit"), {"actor": actor, "action": action_name, "limit": 200})
        rows = [
            row | {"changes": changes(row["before"], row["after"])} for row in await cur.fetchall()
        ]
    context = {"title": "Audit log", "rows": rows, "actor": actor, "action": action_name}
    return render(request, who, "audit.html", context)


ROUTES = [Route("/audit", audit_log, methods=["GET"])]
