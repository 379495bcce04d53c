"""The webpush channel end to end: browsers' subscriptions registered through the users API,
events posted to the API, a running dispatcher, and a push service on loopback that
checks each message's VAPID and decrypts it with the subscription's own keys."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dispatcher.transport_base import Delivery
from dispatcher.webpush_transport import (
    PAYLOAD_MAX,
    WebPushTransport,
    _Vapid,
    encrypt,
    topic_header,
)
from service import webpush
from service.config.notify import WebPushSettings
from service.dev.peers import http_app
from service.dev.push_standin import DEMO_AUTH, DEMO_P256DH
from service.notify.templates import load_templates
from tests.consumers import running, wait_until
from tests.notify_api import EPISODE, RECEIPT, Conn, auth, new_key, running_api
from tests.push_service import PushService, serving_push_service, webpush_data
from tests.support import (
    VAPID_PRIVATE_KEY,
    VAPID_PUBLIC_KEY,
    VAPID_SUBJECT,
    make_config,
    serve,
)

DAY_S = 86400.0


@pytest.fixture
async def push() -> AsyncIterator[PushService]:
    async with serving_push_service() as service:
        yield service


def settings(**changes: Any) -> dict[str, Any]:
    data = webpush_data()
    data["dispatcher"] = {"metrics_port": 0, "bucket_lease": 3, "sweep_interval": 0.2}
    for path, value in changes.items():
        section, name, key = path.split(".")
        data[section][name][key] = value
    return data


class Setup:
    def __init__(self, api: httpx.AsyncClient, db: Conn, key: dict[str, str]) -> None:
        self.api, self.db, self.key = api, db, key
        self.events = 0

    async def user(self, user_id: str, *subscriptions: dict[str, Any]) -> None:
        response = await self.api.put(f"/v1/users/{user_id}", json={}, headers=self.key)
        assert response.status_code == 201, response.text
        for subscription in subscriptions:
            path = f"/v1/users/{user_id}/webpush-subscriptions"
            response = await self.api.put(path, json=subscription, headers=self.key)
            assert response.status_code == 201, response.text

    async def event(self, type_: str, users: list[str], data: dict[str, Any]) -> str:
        self.events += 1
        body = {
            "type": type_,
            "idempotency_key": f"{type_}-{self.events}",
            "recipients": {"user_ids": users},
            "data": data,
        }
        response = await self.api.post("/v1/events", json=body, headers=self.key)
        assert response.status_code == 202, response.text
        event_id: str = response.json()["id"]
        return event_id

    async def rows(self) -> dict[str, tuple[str, str | None]]:
        """user -> (status, reason) of the webpush rows, the latest event's."""
        cur = await self.db.execute(
            "SELECT n.user_id, o.status, o.reason FROM outbox o"
            " JOIN notifications n ON n.id = o.notification_id"
            " WHERE o.consumer = 'webpush' ORDER BY o.id"
        )
        return {u: (s, r) for u, s, r in await cur.fetchall()}

    async def attempts(self) -> list[tuple[str, int, str, int | None, str | None, str | None]]:
        cur = await self.db.execute(
            "SELECT n.user_id, a.attempt, a.outcome, a.status_code, a.provider, a.error"
            " FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id"
            " JOIN notifications n ON n.id = o.notification_id"
            " WHERE o.consumer = 'webpush' ORDER BY n.user_id, a.attempt"
        )
        return list(await cur.fetchall())

    async def endpoints(self) -> list[str]:
        cur = await self.db.execute("SELECT endpoint FROM webpush_subscriptions ORDER BY 1")
        return [e for (e,) in await cur.fetchall()]

    async def settled(self, what: str) -> None:
        async def done() -> bool:
            rows = await self.rows()
            return bool(rows) and all(s != "pending" for s, _ in rows.values())

        await wait_until(done, 15, what)


async def test_the_push_service_decrypts_what_was_rendered_with_ttl_urgency_and_topic(
    db: Conn, db_url: str, push: PushService
) -> None:
    data = settings(**{"event_types.new_episode.urgency": "low"})
    config = make_config(db_url, **data)
    async with running_api(db_url, **data) as api:
        setup = Setup(api, db, auth(new_key(db_url)))
        await setup.user("anna", push.subscribe("anna-laptop"))
        await setup.event("new_episode", ["anna"], EPISODE)
        await setup.event("payment_receipt", ["anna"], RECEIPT)
        async with running(config, db_url):

            async def both() -> bool:
                return len(push.messages("anna-laptop")) == 2

            await wait_until(both, 15, "two messages at the push service")
            await setup.settled("the rows completed")
    cur = await db.execute(
        "SELECT type, id::text FROM notifications WHERE user_id = 'anna' ORDER BY type"
    )
    ids: dict[str, str] = dict(await cur.fetchall())
    by_type = {m["type"]: r for r in push.received if (m := r.message)}
    episode, receipt = by_type["new_episode"], by_type["payment_receipt"]
    # Decrypted with the browser's own key and auth secret: what the template rendered.
    assert episode.message == {
        "notification_id": ids["new_episode"],
        "type": "new_episode",
        "title": "Dark: new episode",
        "body": 'Episode 3, "Past and Present", is out now',
        "link": "https://x/e3",
        "tag": "series-Dark",
        "data": {"series": "Dark"},
    }
    assert receipt.message == {
        "notification_id": ids["payment_receipt"],
        "type": "payment_receipt",
        "title": "Payment received",
        "body": "9.99 EUR for order o-1",
        "data": {"order_id": "o-1"},
    }
    # TTL: what is left of the type's ttl (a day in the test config).
    for r in (episode, receipt):
        assert DAY_S - 60 < int(r.headers["ttl"]) <= DAY_S
        assert r.headers["content-encoding"] == "aes128gcm"
        assert r.claims is not None
        assert (r.claims["aud"], r.claims["sub"]) == (push.base, VAPID_SUBJECT)
        assert time.time() < r.claims["exp"] <= time.time() + DAY_S
    # Urgency: the type's own (low), else its priority's (high).
    assert (episode.headers["urgency"], receipt.headers["urgency"]) == ("low", "high")
    assert episode.headers["topic"] == topic_header("series-Dark")
    assert len(episode.headers["topic"]) <= 32 and "topic" not in receipt.headers
    assert await setup.rows() == {"anna": ("delivered", None)}
    attempts = await setup.attempts()
    assert [(a[2], a[3], a[4]) for a in attempts] == [("delivered", 201, "127.0.0.1")] * 2


async def test_a_410_removes_the_subscription_and_the_others_still_get_the_push(
    db: Conn, db_url: str, push: PushService
) -> None:
    data = settings()
    config = make_config(db_url, **data)
    async with running_api(db_url, **data) as api:
        setup = Setup(api, db, auth(new_key(db_url)))
        laptop, phone = push.subscribe("anna-laptop"), push.subscribe("anna-phone")
        await setup.user("anna", laptop, phone)
        await setup.user("ben", push.subscribe("ben-old"))
        await setup.user("cleo")
        push.status["anna-laptop"] = 410
        push.status["ben-old"] = 404
        await setup.event("new_episode", ["anna", "ben", "cleo"], EPISODE)
        async with running(config, db_url):
            await setup.settled("the rows completed")

            async def forgotten() -> bool:
                return await setup.endpoints() == [phone["endpoint"]]

            await wait_until(forgotten, 10, "the gone subscriptions removed")
            assert await setup.rows() == {"anna": ("delivered", None), "ben": ("failed", None)}
            # No subscription at all: not even queued (the fan-out's contact rule).
            cur = await db.execute("SELECT suppressed FROM notifications WHERE user_id = 'cleo'")
            assert await cur.fetchone() == ({"webpush": "no_contact"},)
            [(_, _, outcome, status, host, error)] = [
                a for a in await setup.attempts() if a[0] == "ben"
            ]
            assert (outcome, status, host, error) == (
                "failed",
                404,
                "127.0.0.1",
                "no valid subscription",
            )

            # The next event goes to the phone alone; ben has nothing left to send to.
            before = len(push.received)
            await setup.event("new_episode", ["anna", "ben"], EPISODE | {"episode": 4})

            async def second() -> bool:
                return len(push.messages("anna-phone")) == 2

            await wait_until(second, 15, "the second push")
    assert [r.browser for r in push.received[before:]] == ["anna-phone"]
    assert [m["body"] for m in push.messages("anna-phone")] == [
        'Episode 3, "Past and Present", is out now',
        'Episode 4, "Past and Present", is out now',
    ]
    # The push service's error quoted the endpoint; the attempts table does not.
    for _, _, _, _, _, error in await setup.attempts():
        assert "/push/" not in (error or "")


async def test_a_500_is_retried_then_delivered_and_retry_after_is_a_floor(
    db: Conn, db_url: str, push: PushService
) -> None:
    data = settings(**{"channels.webpush.backoff": {"initial": 0.05, "factor": 2.0, "cap": 5}})
    config = make_config(db_url, **data)
    async with running_api(db_url, **data) as api:
        setup = Setup(api, db, auth(new_key(db_url)))
        await setup.user("anna", push.subscribe("anna-laptop"))
        push.failures["anna-laptop"] = 2
        push.retry_after = "1"
        await setup.event("new_episode", ["anna"], EPISODE)
        async with running(config, db_url):
            await setup.settled("the row delivered")
    assert [(a[1], a[2], a[3]) for a in await setup.attempts()] == [
        (1, "retry", 500),
        (2, "retry", 500),
        (3, "delivered", 201),
    ]
    cur = await db.execute(
        "SELECT extract(epoch FROM max(started_at) - min(started_at)) FROM delivery_attempts"
    )
    row = await cur.fetchone()
    assert row is not None
    # Two waits of at least the push service's Retry-After (1 s), not the 0.05 s backoff.
    assert float(row[0]) >= 2.0
    assert len(push.messages("anna-laptop")) == 3


async def test_a_message_too_large_for_a_push_service_fails_before_anything_is_sent(
    db: Conn, db_url: str, push: PushService
) -> None:
    data = settings()
    config = make_config(db_url, **data)
    async with running_api(db_url, **data) as api:
        setup = Setup(api, db, auth(new_key(db_url)))
        await setup.user("anna", push.subscribe("anna-laptop"))
        await setup.event("new_episode", ["anna"], EPISODE | {"title": "x" * PAYLOAD_MAX})
        async with running(config, db_url):
            await setup.settled("the row failed")
    assert await setup.rows() == {"anna": ("failed", None)}
    [(_, _, outcome, status, _, error)] = await setup.attempts()
    assert (outcome, status) == ("failed", None)
    assert error is not None and f"a push service takes {PAYLOAD_MAX}" in error
    assert push.received == []


async def test_a_subscription_made_with_another_key_is_refused_for_good(
    db: Conn, db_url: str, push: PushService
) -> None:
    other = webpush.public_key_text(webpush.private_key(webpush.new_private_key()))
    data = settings()
    config = make_config(db_url, **data)
    async with running_api(db_url, **data) as api:
        setup = Setup(api, db, auth(new_key(db_url)))
        await setup.user("anna", push.subscribe("anna-laptop", server_key=other))
        await setup.event("new_episode", ["anna"], EPISODE)
        async with running(config, db_url):
            await setup.settled("the row failed")
    assert await setup.rows() == {"anna": ("failed", None)}
    assert [(a[2], a[3]) for a in await setup.attempts()] == [("failed", 403)]
    [refused] = push.received
    assert refused.refused == "k is not the key the subscription was made with"
    # A refusal is no 404/410: the subscription stays.
    assert len(await setup.endpoints()) == 1


async def test_the_stand_in_verifies_vapid_so_a_forged_token_is_refused(
    push: PushService,
) -> None:
    """The checks the tests above rely on are real: only a token signed with the
    subscription's applicationServerKey, for this origin, not expired, is accepted."""
    subscription = push.subscribe("anna-laptop")
    ours = _Vapid(WebPushSettings(vapid_private_key=VAPID_PRIVATE_KEY, vapid_subject=VAPID_SUBJECT))
    forger = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())

    def forged(claims: dict[str, Any], key: ec.EllipticCurvePrivateKey = forger) -> str:
        return f"vapid t={jwt.encode(claims, key, algorithm='ES256')}, k={VAPID_PUBLIC_KEY}"

    good = {"aud": push.base, "exp": now + 600, "sub": VAPID_SUBJECT}
    our_key = webpush.private_key(VAPID_PRIVATE_KEY)
    cases = {
        "ours": (ours.authorization(push.base), 201),
        "signed by another key": (forged(good), 401),
        "another audience": (forged(good | {"aud": "https://elsewhere"}, our_key), 401),
        "expired": (forged(good | {"exp": now - 5}, our_key), 401),
        "a week ahead": (forged(good | {"exp": now + 7 * 86400}, our_key), 401),
        "no sub": (forged({"aud": push.base, "exp": now + 600}, our_key), 401),
    }
    body = encrypt(b'{"title": "hi"}', subscription["keys"]["p256dh"], subscription["keys"]["auth"])
    async with httpx.AsyncClient() as client:
        for what, (authorization, status) in cases.items():
            response = await client.post(
                subscription["endpoint"],
                content=body,
                headers={
                    "Authorization": authorization,
                    "Content-Encoding": "aes128gcm",
                    "TTL": "60",
                },
            )
            assert response.status_code == status, (what, response.text)
    assert push.messages("anna-laptop") == [{"title": "hi"}]


async def test_bin_dev_s_stand_in_decrypts_for_the_demo_browser_of_the_docs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/webpush.md's demo: the transport's push reaches bin/dev's stand-in, which
    verifies it and shows its title; a subscription with other keys is gone (410)."""
    config = make_config("postgresql://127.0.0.1:9/unused", **settings())
    assert config.notify.webpush is not None
    app = http_app({}, config.notify.webpush.vapid_private_key)
    sender = WebPushTransport(
        config.channels, load_templates(config), config.notify.webpush, config.event_types
    )
    async with serve(app) as base:
        demo = {"endpoint": f"{base}/webpush/demo", "p256dh": DEMO_P256DH, "auth": DEMO_AUTH}
        other = PushService().subscribe("other")
        stranger = {
            "endpoint": f"{base}/webpush/other",
            "p256dh": other["keys"]["p256dh"],
            "auth": other["keys"]["auth"],
        }
        outcomes = []
        for n, subscription in enumerate((demo, stranger), 1):
            payload = {
                "notification_id": n,
                "event_id": "e-1",
                "type": "new_episode",
                "user_id": "anna",
                "locale": "en",
                "data": EPISODE,
                "subscriptions": [subscription],
                "expires_at": "2999-01-01T00:00:00+00:00",
            }
            delivery = Delivery(
                n, f"e-{n}", "webpush", "client:anna", payload, 1, datetime.now(UTC)
            )
            outcomes += await sender.deliver("webpush", [delivery])
        await sender.close()
    assert [(o.kind, o.status_code, o.invalid_tokens) for o in outcomes] == [
        ("delivered", 201, ()),
        ("failed", 410, (stranger["endpoint"],)),
    ]
    said = capsys.readouterr().out
    assert "web push to demo: 'Dark: new episode', VAPID verified" in said
    assert "web push to other: not for the demo browser's keys; answered 410" in said
