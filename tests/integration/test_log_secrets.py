"""Nothing secret reaches the logs: a full run (a seen mark delivered to a signed webhook,
an event sent by email, push and an escalation SMS through a failing then a working
provider, an admin sign-in with a wrong password, API keys and tokens good and bad) with
every line written at DEBUG captured, then searched for each secret and contact used."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import psycopg
import pytest

from service.admin.accounts import create_user
from service.app import create_app
from service.config.load import parse_config
from service.logs import SEEN_ACCESS_LOG_RATE
from tests.consumers import RecordingConsumer, http_consumer, running, wait_until
from tests.log_capture import captured_logs
from tests.notify_api import RECEIPT, auth, new_key
from tests.providers import serving_providers
from tests.smtp_server import smtp_server
from tests.support import (
    JWT_SECRET,
    PROVIDER_SECRET,
    UNSUBSCRIBE_SECRET,
    WEBHOOK_SECRET,
    bearer,
    client_token,
    config_data,
    notify_data,
    serve,
)

EMAIL = "secret.person@example.com"
PHONE = "+4915100009999"
PUSH_TOKEN = "push-token-SECRET-7f3a9c"
ADMIN_PASSWORD = "the-right-admin-password-1"
WRONG_PASSWORD = "a-wrong-admin-password-2"


async def admin_sign_in(api: httpx.AsyncClient, password: str) -> httpx.Response:
    form = await api.get("/admin/login")
    match = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert match, form.text
    return await api.post(
        "/admin/login",
        data={"username": "manager", "password": password, "csrf": match[1]},
    )


async def test_a_full_run_logs_no_secret_and_no_contact(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SEEN_ACCESS_LOG_RATE, "1")
    consumer = RecordingConsumer()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await create_user(conn, "manager", ADMIN_PASSWORD, "manager", actor="test")
    key = new_key(db_url, "billing")
    token = client_token("user-s")
    bad_key = "mn_0badc0de_" + "Q" * 43
    async with (
        smtp_server() as smtp,
        serving_providers() as (providers, providers_url),
        serve(consumer.app) as consumer_url,
    ):
        data = config_data(
            db_url,
            dispatcher={"sweep_interval": 0.2},
            consumers={"promotions": http_consumer(f"{consumer_url}/seen")},
            admin={"secure_cookies": False, "failure_delay": 0.01, "max_delay": 0.02},
        )
        data |= notify_data(smtp_port=smtp.port, providers_url=providers_url)
        data["tags"] = {
            name: tag for name, tag in data["tags"].items() if tag.get("consumer") != "goals"
        }
        data["consumers"].pop("banners", None)
        data["tags"].pop("banners", None)
        data["event_types"]["payment_receipt"]["escalation"]["after"] = 0.3
        config = parse_config(data, "log-secrets")
        # The first SMS provider refuses, quoting the request (the phone number) back.
        providers.status["sms-primary"] = 503
        with captured_logs(logging.DEBUG) as logs:
            async with (
                serve(create_app(config)) as url,
                httpx.AsyncClient(base_url=url, timeout=30) as api,
                running(config, db_url),
            ):
                user = {
                    "email": EMAIL,
                    "phone": PHONE,
                    "devices": [{"token": PUSH_TOKEN, "platform": "ios"}],
                }
                response = await api.put("/v1/users/user-s", json=user, headers=auth(key))
                assert response.status_code in (200, 201), response.text
                assert (await api.get("/v1/users/user-s", headers=auth(key))).status_code == 200
                event = {
                    "type": "payment_receipt",
                    "idempotency_key": "receipt-s",
                    "recipients": {"user_ids": ["user-s"]},
                    "data": RECEIPT,
                }
                response = await api.post("/v1/events", json=event, headers=auth(key))
                assert response.status_code == 202, response.text
                response = await api.post(
                    "/v1/seen", json={"tag": "promotions", "id": "p-1"}, headers=bearer(token)
                )
                assert response.status_code == 200, response.text
                refused = [
                    await api.post("/v1/events", json=event, headers=auth(bad_key)),
                    await api.get("/v1/inbox", headers=bearer(token + "x")),
                    await api.post("/v1/seen", json={"tag": "x", "id": "y"}, headers=auth(key)),
                ]
                assert [r.status_code for r in refused] == [401, 401, 403]
                assert (await admin_sign_in(api, WRONG_PASSWORD)).status_code == 401

                await smtp.wait_for(1)

                async def all_sent() -> bool:
                    kinds = {s.provider for s in providers.sent}
                    return {"push-primary", "sms-fallback"} <= kinds and bool(consumer.requests)

                await wait_until(all_sent, 15, "the push, the SMS and the webhook")

                async def all_logged() -> bool:
                    lines = logs.where(logger="dispatcher.attempts", outcome="delivered")
                    return {"promotions", "email", "push", "sms"} <= {x["consumer"] for x in lines}

                await wait_until(all_logged, 5, "the delivery attempt lines")

    signatures = [r.headers["webhook-signature"] for r in consumer.requests]
    signatures += [s.headers["webhook-signature"] for s in providers.sent]
    secrets: dict[str, str] = {
        "contact: email": EMAIL,
        "contact: email's local part": EMAIL.split("@")[0],
        "contact: phone": PHONE,
        "contact: phone digits": PHONE.lstrip("+"),
        "contact: push token": PUSH_TOKEN,
        "API key": key,
        "API key's secret part": key.split("_", 2)[2],
        "unknown API key": bad_key,
        "client JWT": token,
        "JWT signing secret": JWT_SECRET,
        "webhook secret": WEBHOOK_SECRET,
        "provider secret": PROVIDER_SECRET,
        "unsubscribe secret": UNSUBSCRIBE_SECRET,
        "admin password": ADMIN_PASSWORD,
        "wrong admin password": WRONG_PASSWORD,
    }
    for n, signature in enumerate(signatures):
        secrets[f"signature {n}"] = signature.split(",", 1)[1]
    text = logs.text
    leaked = {what: value for what, value in secrets.items() if value in text}
    assert not leaked, f"in the logs: {leaked}"

    # Not vacuous: the run was logged, line by line, as JSON.
    lines = logs.lines()
    assert len(lines) > 20
    routes = {(x["route"], x["status"]) for x in logs.where(logger="service.access")}
    assert {("/v1/users/{user_id}", 200), ("/v1/events", 202), ("/v1/seen", 200)} <= routes
    assert ("/admin/login", 401) in routes
    sms: list[dict[str, Any]] = logs.where(logger="dispatcher.attempts", consumer="sms")
    assert {x["provider"] for x in sms} >= {"sms-fallback"}
