"""The audit log page: every admin action and ops command, newest first."""

from __future__ import annotations

from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.admin.sessions import Session
from service.admin.web import page, pool_of, render
from service.sql import q


@page("manager")
async def audit_log(request: Request, who: Session) -> Response:
    actor = request.query_params.get("actor") or None
    action_name = request.query_params.get("action") or None
    async with pool_of(request).connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("list_audit"), {"actor": actor, "action": action_name, "limit": 200})
        rows = await cur.fetchall()
    context = {"title": "Audit log", "rows": rows, "actor": actor, "action": action_name}
    return render(request, who, "audit.html", context)


ROUTES = [Route("/audit", audit_log, methods=["GET"])]
