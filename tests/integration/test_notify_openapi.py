"""The notification API's half of /openapi.json: every route documented, generated from
the Structs, with its security scheme and every error code it can answer; the one-click
unsubscribe links too."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from service import openapi
from service.app import OPENAPI_SECTIONS, create_app
from service.errors import ERROR_CODES
from service.notify import events, inbox, preferences, unsubscribe, users
from tests.notify_api import running_api
from tests.support import make_config

CLIENT_PATHS = {"/v1/preferences", "/v1/inbox"}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _codes(op: dict[str, Any]) -> dict[str, str]:
    """code -> the status it is documented under."""
    found = {}
    for status, response in op["responses"].items():
        for code in ERROR_CODES:
            if f"`{code}`" in response.get("description", ""):
                found[code] = status
    return found


async def test_every_notification_route_is_documented(db_url: str) -> None:
    async with running_api(db_url) as api:
        response = await api.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.rsplit("/", 1)[1] in schemas, ref
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"

    routes = [
        (route.path, method.lower())
        for module in (events, users, preferences, inbox)
        for route in module.ROUTES
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    ]
    assert len(routes) == 14
    for path, method in routes:
        op = doc["paths"][path][method]
        client = path in CLIENT_PATHS
        assert op["security"] == ([{"bearer": []}] if client else [{"apiKey": []}]), path
        codes = _codes(op)
        for code, status in codes.items():
            assert str(ERROR_CODES[code][0]) == status, (path, code)
        expected = (
            {"unauthenticated", "invalid_token", "client_identity_required"}
            if client
            else {"invalid_api_key", "service_key_required", "insufficient_scope"}
        )
        assert expected <= set(codes), (path, method)
        assert {"database_unavailable", "internal_error"} <= set(codes)
        if "requestBody" in op:
            assert {"malformed_json", "invalid_body", "unsupported_media_type"} <= set(codes)
        if not client:
            assert "Needs an API key with scope" in op["description"], path

    post_event = doc["paths"]["/v1/events"]["post"]
    assert set(post_event["responses"]) >= {"200", "202", "400", "401", "403", "413"}
    assert {
        "unknown_event_type",
        "missing_data",
        "data_too_large",
        "invalid_recipients",
        "invalid_idempotency_key",
        "invalid_send_at",
    } <= set(_codes(post_event))
    event_request = schemas["EventRequest"]
    assert set(event_request["required"]) == {"type", "idempotency_key", "recipients"}
    assert event_request["properties"]["send_at"]["anyOf"][0]["format"] == "date-time"
    assert set(schemas["Recipients"]["properties"]) == {"user_ids", "users", "topic", "all"}
    assert schemas["UserImport"]["properties"]["users"]["maxItems"] == 1000
    assert schemas["QuietHours"]["properties"]["start"]["pattern"]

    # Every code of the notification API is documented where it can happen.
    documented = {
        code for path in doc["paths"].values() for op in path.values() for code in _codes(op)
    }
    mine = {
        "client_identity_required",
        "invalid_api_key",
        "service_key_required",
        "insufficient_scope",
        "invalid_query",
        "invalid_user_id",
        "invalid_topic",
        "unknown_event_type",
        "missing_data",
        "invalid_recipients",
        "invalid_idempotency_key",
        "invalid_send_at",
        "unknown_category",
        "unknown_channel",
        "transactional_category",
        "invalid_quiet_hours",
        "unknown_user",
        "unknown_event",
        "unknown_notification",
        "data_too_large",
        "invalid_unsubscribe_link",
    }
    assert mine <= set(ERROR_CODES)
    assert mine <= documented, mine - documented


async def test_the_unsubscribe_link_is_documented(db_url: str) -> None:
    async with running_api(db_url) as api:
        doc = (await api.get("/openapi.json")).json()
    path = doc["paths"][unsubscribe.PATH]
    methods = {
        method.lower()
        for route in unsubscribe.ROUTES
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert set(path) == methods == {"get", "post"}
    link_errors = {"invalid_unsubscribe_link", "transactional_category"}
    for method, op in path.items():
        # The signed link is the credential: no scheme applies.
        assert op["security"] == [], method
        assert [p["name"] for p in op["parameters"]] == ["token"]
        codes = _codes(op)
        assert link_errors <= set(codes), method
        assert {codes[c] for c in link_errors} == {"400"}
        assert "text/html" in op["responses"]["200"]["content"]
    # GET only reads the link; POST writes, so it can meet an outage.
    assert "database_unavailable" not in _codes(path["get"])
    assert "database_unavailable" in _codes(path["post"])
    assert "requestBody" not in path["get"]
    assert path["post"]["requestBody"]["required"] is False
    ok = path["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/UnsubscribeResult"}
    result = doc["components"]["schemas"]["UnsubscribeResult"]
    assert set(result["properties"]) == {"status", "category", "channel"}
    assert set(result["properties"]["status"]["enum"]) == {"unsubscribed", "unknown_user"}


def test_every_mounted_route_is_documented(db_url: str) -> None:
    doc = openapi.api_document(*OPENAPI_SECTIONS)
    undocumented = [
        (route.path, method)
        for route in create_app(make_config(db_url)).routes
        if isinstance(route, Route) and route.path != "/openapi.json"
        for method in route.methods or ()
        if method != "HEAD" and method.lower() not in doc["paths"].get(route.path, {})
    ]
    assert undocumented == []
