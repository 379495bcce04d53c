"""The notification API's half of /openapi.json: every route documented, generated from
the Structs, with its security scheme and every error code it can answer; the one-click
unsubscribe links too."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema_rs
from starlette.routing import Route

from service import openapi
from service.app import OPENAPI_SECTIONS, create_app
from service.errors import ERROR_CODES
from service.notify import events, inbox, preference_center, preferences, unsubscribe, users
from tests.notify_api import auth, new_key, running_api
from tests.support import bearer, client_token, config_data, make_config

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
        "invalid_preferences_link",
        "invalid_preferences_form",
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


def _validator(doc: dict[str, Any], name: str) -> jsonschema_rs.Validator:
    """A validator of one of the document's schemas, its references resolved in it."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema_rs.Draft202012Validator(schema)


def _documented(op: dict[str, Any], response: httpx.Response) -> str:
    """The refusal's code, asserted to be documented under its status for `op`."""
    code: str = response.json()["code"]
    assert 400 <= response.status_code < 500, response.text
    assert f"`{code}`" in op["responses"][str(response.status_code)]["description"], code
    return code


async def test_the_served_schema_accepts_what_the_service_accepts(db_url: str) -> None:
    # A category of this config only: the enums are this config's, not the example's.
    categories = config_data(db_url)["categories"] | {"weekly": {"description": "Weekly"}}
    async with running_api(db_url, categories=categories) as api:
        doc = (await api.get("/openapi.json")).json()
        key = auth(new_key(db_url))
        assert (await api.put("/v1/users/anna", json={}, headers=key)).status_code == 201
        anna = bearer(client_token("anna"))
        op = doc["paths"]["/v1/preferences"]["put"]
        body = _validator(doc, "PreferencesBody")
        schema = doc["components"]["schemas"]["PreferencesBody"]["properties"]
        named = schema["categories"]["propertyNames"]["enum"]
        channels = schema["categories"]["additionalProperties"]["propertyNames"]["enum"]
        assert set(named) == {"content", "social", "account", "billing", "weekly"}
        assert set(channels) == {"email", "sms", "push", "inbox"}
        assert schema["quiet_hours"]["propertyNames"]["enum"] == channels
        transactional = set(schema["categories"]["properties"])
        assert transactional == {"account", "billing"}

        # Every name the schema offers is accepted, with every value it allows.
        for category in named:
            for channel in channels:
                for on in (True,) if category in transactional else (True, False):
                    sent = {
                        "categories": {category: {channel: on}},
                        "quiet_hours": {channel: {"start": "22:00", "end": "07:00"}},
                    }
                    assert body.is_valid(sent), sent
                    response = await api.put("/v1/preferences", json=sent, headers=anna)
                    assert response.status_code == 200, (sent, response.text)

        # Everything the schema refuses is refused with a code documented for it.
        refused = {
            "unknown_category": {"categories": {"nope": {"email": True}}},
            "unknown_channel": {"categories": {"content": {"fax": True}}},
            "transactional_category": {"categories": {"account": {"email": False}}},
        }
        for code, wrong in refused.items():
            assert not body.is_valid(wrong), wrong
            response = await api.put("/v1/preferences", json=wrong, headers=anna)
            assert _documented(op, response) == code
        quiet = {"quiet_hours": {"fax": {"start": "22:00", "end": "07:00"}}}
        assert not body.is_valid(quiet)
        response = await api.put("/v1/preferences", json=quiet, headers=anna)
        assert _documented(op, response) == "unknown_channel"

        # The service's users endpoint takes the same body, and the same names.
        user_op = doc["paths"]["/v1/users/{user_id}/preferences"]["put"]
        user_body = user_op["requestBody"]["content"]["application/json"]["schema"]
        assert user_body == {"$ref": "#/components/schemas/PreferencesBody"}
        wrong = refused["unknown_category"]
        response = await api.put("/v1/users/anna/preferences", json=wrong, headers=key)
        assert _documented(user_op, response) == "unknown_category"


async def test_the_unsubscribe_token_format_is_published_and_enforced(db_url: str) -> None:
    config = make_config(db_url)
    async with running_api(db_url) as api:
        doc = (await api.get("/openapi.json")).json()
        key = auth(new_key(db_url))
        user = {"email": "anna@example.com"}
        assert (await api.put("/v1/users/anna", json=user, headers=key)).status_code == 201
        op = doc["paths"][unsubscribe.PATH]["post"]
        (param,) = op["parameters"]
        shape = re.compile(param["schema"]["pattern"])
        assert param["schema"]["maxLength"] == unsubscribe.MAX_TOKEN_CHARS

        token = unsubscribe.make_token(config.notify, "anna", "content")
        assert shape.search(token) and len(token) <= param["schema"]["maxLength"]
        json_answer = {"Accept": "application/json"}
        response = await api.post(f"/v1/unsubscribe/{token}", headers=json_answer)
        assert response.status_code == 200, response.text

        # Outside the pattern: refused as documented, even where the signature would pass
        # (base64 decoders forgive padding).
        for bad in (token + "=", token.replace(".", "=.", 1), "a.b", token + ".x", "x" * 10):
            assert not shape.search(bad), bad
            response = await api.post(f"/v1/unsubscribe/{bad}", headers=json_answer)
            assert _documented(op, response) == "invalid_unsubscribe_link"
        # No token, or one with a `/`, is another path: the documented not_found.
        for path in ("/v1/unsubscribe/", f"/v1/unsubscribe/{token}/x"):
            response = await api.post(path, headers=json_answer)
            assert _documented(op, response) == "not_found"


async def test_the_preference_center_is_documented_as_it_answers(db_url: str) -> None:
    config = make_config(db_url)
    async with running_api(db_url) as api:
        doc = (await api.get("/openapi.json")).json()
        path = doc["paths"][preference_center.PATH]
        methods = {
            method.lower()
            for route in preference_center.ROUTES
            if isinstance(route, Route)
            for method in route.methods or ()
            if method != "HEAD"
        }
        assert set(path) == methods == {"get", "post"}
        for method, op in path.items():
            # The signed link is the credential: no scheme applies.
            assert op["security"] == [], method
            token = op["parameters"][0]
            assert token["schema"]["pattern"] == unsubscribe.COMPACT_JWS_PATTERN
            codes = _codes(op)
            assert {"invalid_preferences_link", "unknown_user"} <= set(codes), method
            # A refusal may be a page (for a browser) or JSON.
            assert "text/html" in op["responses"]["400"]["content"]
            assert "application/json" in op["responses"]["400"]["content"]
        assert "text/html" in path["get"]["responses"]["200"]["content"]
        assert "requestBody" not in path["get"]
        post = path["post"]
        assert set(post["responses"]) >= {"303", "400", "403", "404", "413", "415"}
        codes = _codes(post)
        assert codes["invalid_preferences_form"] == "403"
        for code in ("transactional_category", "unknown_category", "invalid_quiet_hours"):
            assert codes[code] == "400", code
        media = post["requestBody"]["content"]
        assert list(media) == ["application/x-www-form-urlencoded"]
        assert media["application/x-www-form-urlencoded"]["schema"] == {
            "$ref": "#/components/schemas/PreferenceForm"
        }

        # The served form schema names exactly this config's boxes and windows, and takes
        # the body the page itself posts.
        form = doc["components"]["schemas"]["PreferenceForm"]
        fields = set(form["properties"])
        assert fields == {"form_token", "action", "muted"} | {
            f"on/{c}/{ch}" for c in config.categories for ch in config.channels
        } | {f"quiet/{ch}/{end}" for ch in config.channels for end in ("start", "end")}
        assert form["properties"]["on/account/email"]["enum"] == ["on"]
        assert form["additionalProperties"] is False
        validator = _validator(doc, "PreferenceForm")
        key = auth(new_key(db_url))
        assert (await api.put("/v1/users/anna", json={}, headers=key)).status_code == 201
        link = "/v1/preferences/manage/" + preference_center.make_token(config.notify, "anna")
        page = (await api.get(link)).text
        posted = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))
        posted |= dict(re.findall(r'<input type="time" name="([^"]+)" value="([^"]*)">', page))
        assert validator.is_valid(posted), posted
        form_type = {"Content-Type": "application/x-www-form-urlencoded"}
        answer = await api.post(link, headers=form_type, data=posted)
        assert answer.status_code == 303, answer.text
        # What the schema refuses, the service refuses with a code documented for it.
        json_answer = form_type | {"Accept": "application/json"}
        wrong = {
            "transactional_category": {"on/account/email": "off"},
            "unknown_category": {"on/nope/email": "off"},
            "invalid_body": {"colour": "red"},
            "invalid_quiet_hours": {"quiet/email/start": "7:00", "quiet/email/end": "08:00"},
        }
        for code, fields_ in wrong.items():
            assert not validator.is_valid(posted | fields_), code
            answer = await api.post(link, headers=json_answer, data=posted | fields_)
            assert _documented(post, answer) == code
        del posted["form_token"]
        assert not validator.is_valid(posted)
        answer = await api.post(link, headers=json_answer, data=posted)
        assert _documented(post, answer) == "invalid_preferences_form"
