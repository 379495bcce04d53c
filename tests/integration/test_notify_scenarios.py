"""The notification scenarios end to end, as a producer, a user and ops see them: the real
API over HTTP, a real dispatcher, an SMTP server (aiosmtpd) and SMS / push providers
(Starlette apps) on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from service.app import create_app
from service.config.load import parse_config
from service.wake import WAKE_QUEUE, WAKE_TASK
from tests.consumers import running, wait_until
from tests.notify_api import EPISODE, RECEIPT, auth, new_key
from tests.providers import Providers, serving_providers
from tests.smtp_server import SmtpServer, smtp_server
from tests.support import bearer, client_token, config_data, notify_data, serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


@dataclass
class World:
    api: httpx.AsyncClient
    key: dict[str, str]
    smtp: SmtpServer
    providers: Providers

    async def put_user(self, user_id: str, **fields: Any) -> None:
        response = await self.api.put(f"/v1/users/{user_id}", json=fields, headers=self.key)
        assert response.status_code in (200, 201), response.text

    async def post_event(self, type_: str, user_ids: list[str], data: dict[str, Any]) -> str:
        body = {
            "type": type_,
            "idempotency_key": f"{type_}-{'-'.join(user_ids)}",
            "recipients": {"user_ids": user_ids},
            "data": data,
        }
        response = await self.api.post("/v1/events", json=body, headers=self.key)
        assert response.status_code == 202, response.text
        event_id: str = response.json()["id"]
        return event_id

    async def status(self, event_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/v1/events/{event_id}", headers=self.key)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def settled_status(self, event_id: str, **sent: int) -> dict[str, Any]:
        """The event's status once each named channel counts that many sent: a peer has
        the message a moment before the dispatcher records it."""

        async def recorded() -> bool:
            status = await self.status(event_id)
            return all(counts_of(status, ch)["sent"] == n for ch, n in sent.items())

        await wait_until(recorded, 10, f"{event_id} to count {sent} sent")
        return await self.status(event_id)

    async def inbox(self, user_id: str) -> dict[str, Any]:
        response = await self.api.get("/v1/inbox", headers=bearer(client_token(user_id)))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@asynccontextmanager
async def world(db_url: str, *, escalate_after_s: float = 600) -> AsyncIterator[World]:
    async with smtp_server() as smtp, serving_providers() as (providers, base):
        data = config_data(db_url, dispatcher={"sweep_interval": 0.2})
        data |= notify_data(smtp_port=smtp.port, providers_url=base)
        escalation = data["event_types"]["payment_receipt"]["escalation"]
        escalation["after"] = escalate_after_s
        config = parse_config(data, "scenario-config")
        async with (
            serve(create_app(config)) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as api,
            running(config, db_url),
        ):
            key = auth(new_key(db_url, "content"))
            yield World(api, key, smtp, providers)


def counts_of(status: dict[str, Any], channel: str) -> dict[str, Any]:
    counts: dict[str, Any] = status["channels"][channel]
    return counts


async def test_one_event_reaches_three_users_by_email_push_and_inbox_honouring_preferences(
    db_url: str,
) -> None:
    async with world(db_url) as w:
        await w.put_user(
            "anna",
            email="anna@example.com",
            locale="ru",
            devices=[{"token": "tok-anna", "platform": "ios"}],
        )
        await w.put_user(
            "ben", email="ben@example.com", devices=[{"token": "tok-ben", "platform": "android"}]
        )
        await w.put_user(
            "cleo", email="cleo@example.com", devices=[{"token": "tok-cleo", "platform": "web"}]
        )
        # Cleo switched content pushes off herself.
        response = await w.api.put(
            "/v1/preferences",
            json={"categories": {"content": {"push": False}}},
            headers=bearer(client_token("cleo")),
        )
        assert response.status_code == 200, response.text

        event_id = await w.post_event("new_episode", ["anna", "ben", "cleo"], EPISODE)

        mails = await w.smtp.wait_for(3)
        by_rcpt = {m.rcpt_tos[0]: m.message for m in mails}
        assert set(by_rcpt) == {"anna@example.com", "ben@example.com", "cleo@example.com"}
        ben = by_rcpt["ben@example.com"]
        assert ben["Subject"] == "New episode of Dark: Past and Present"
        assert ben.get_content_type() == "multipart/alternative"
        text = ben.get_body(("plain",))
        html = ben.get_body(("html",))
        assert text is not None and "Watch it: https://x/e3" in text.get_content()
        assert html is not None and "<b>Dark</b>" in html.get_content()
        assert ben["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert by_rcpt["anna@example.com"]["Subject"].startswith("Новая серия «Dark»")

        async def pushed() -> bool:
            return len(w.providers.to("push-primary")) >= 2

        await wait_until(pushed, 10, "two pushes")
        pushes = {s.body["token"]: s.body for s in w.providers.to("push-primary")}
        assert set(pushes) == {"tok-anna", "tok-ben"}  # not Cleo: she switched it off
        assert pushes["tok-ben"]["title"] == "Dark: new episode"
        assert all(s.verified for s in w.providers.sent)

        for user in ("anna", "ben", "cleo"):

            async def listed(user: str = user) -> bool:
                return len((await w.inbox(user))["items"]) == 1

            await wait_until(listed, 10, f"{user}'s inbox item")
        item = (await w.inbox("ben"))["items"][0]
        assert (item["title"], item["link"], item["seen"]) == (
            "New episode of Dark",
            "https://x/e3",
            False,
        )

        status = await w.settled_status(event_id, email=3, inbox=3, push=2)
        assert status["status"] == "done"
        assert status["recipients"] == {"notified": 3, "no_recipient": 0}
        assert counts_of(status, "email")["sent"] == 3
        assert counts_of(status, "inbox")["sent"] == 3
        push = counts_of(status, "push")
        assert push["sent"] == 2
        assert push["suppressed"]["preference"] == 1  # the status says why Cleo got none

        # A transactional type still reaches a user who muted everything.
        response = await w.api.put(
            "/v1/users/cleo/preferences", json={"muted": True}, headers=w.key
        )
        assert response.status_code == 200, response.text
        receipt_id = await w.post_event("payment_receipt", ["cleo"], RECEIPT)
        mails = await w.smtp.wait_for(4)
        assert mails[-1].message["Subject"] == "Receipt for order o-1"
        assert "List-Unsubscribe" not in mails[-1].message  # transactional: none offered

        async def receipt_pushed() -> bool:
            return any(s.body.get("token") == "tok-cleo" for s in w.providers.sent)

        await wait_until(receipt_pushed, 10, "the receipt's push to Cleo")
        receipt = await w.settled_status(receipt_id, email=1)
        assert counts_of(receipt, "email")["sent"] == 1
        assert counts_of(receipt, "push")["suppressed"]["muted"] == 0


async def test_quiet_hours_hold_a_push_and_release_it_when_they_end(db: Conn, db_url: str) -> None:
    async with world(db_url) as w:
        zone = "Asia/Tokyo"
        await w.put_user("dan", timezone=zone, devices=[{"token": "tok-dan", "platform": "ios"}])
        # Quiet hours in Dan's zone that end three seconds from now. The API takes whole
        # minutes; the test writes seconds so that it need not wait one out.
        local = datetime.now(UTC).astimezone(ZoneInfo(zone))
        ends = (local + timedelta(seconds=3)).replace(microsecond=0)
        window = {
            "push": {
                "start": (local - timedelta(hours=1)).strftime("%H:%M:%S"),
                "end": ends.strftime("%H:%M:%S"),
            }
        }
        await db.execute(
            "INSERT INTO preferences (user_id, quiet_hours) VALUES ('dan', %s)",
            (json.dumps(window),),
        )
        event_id = await w.post_event("new_episode", ["dan"], EPISODE)
        held = counts_of(await w.status(event_id), "push")
        # A machine slow enough to post after the end has nothing held to show; the
        # timestamp below still proves the push waited.
        if datetime.now(UTC) < ends:
            assert (held["held"], held["sent"]) == (1, 0)

        async def released() -> bool:
            return len(w.providers.to("push-primary")) == 1

        await wait_until(released, 10, "the held push")
        # Signed when sent: not before the quiet hours ended.
        assert w.providers.sent[0].timestamp >= int(ends.timestamp())

        async def sent() -> bool:
            return bool(counts_of(await w.status(event_id), "push")["sent"] == 1)

        await wait_until(sent, 5, "the status to say sent")


@pytest.mark.citus
async def test_escalation_sends_sms_unless_the_push_was_seen_and_fails_over_to_the_fallback(
    db: Conn, db_url: str
) -> None:
    # The escalation is due long after the test: it is brought forward once Erin's mark is
    # in (below), so how fast a busy machine delivers the push decides nothing.
    async with world(db_url, escalate_after_s=600) as w:
        w.providers.status["sms-primary"] = 503
        for user in ("erin", "fay"):
            await w.put_user(
                user,
                email=f"{user}@example.com",
                phone="+15550100" + ("1" if user == "erin" else "2"),
                devices=[{"token": f"tok-{user}", "platform": "ios"}],
            )
        erin_event = await w.post_event("payment_receipt", ["erin"], RECEIPT)
        fay_event = await w.post_event("payment_receipt", ["fay"], RECEIPT | {"order_id": "o-2"})

        # Erin opens the push at once: the app marks the notification seen.
        async def erin_pushed() -> bool:
            return any(s.body.get("token") == "tok-erin" for s in w.providers.sent)

        await wait_until(erin_pushed, 10, "Erin's push")
        push = next(s.body for s in w.providers.sent if s.body.get("token") == "tok-erin")
        seen = await w.api.post(
            "/v1/seen",
            json={"tag": "notifications", "id": str(push["notification_id"])},
            headers=bearer(client_token("erin")),
        )
        assert seen.status_code == 200, seen.text

        # The escalation's delay passes (the rows come due, the dispatcher is woken). Fay
        # has seen nothing: her receipt goes by SMS, through the fallback provider because
        # the primary answers 503.
        await db.execute(
            "UPDATE outbox SET next_attempt_at = %s WHERE consumer = 'sms' AND status = 'pending'",
            (datetime.now(UTC),),
        )
        await db.execute("SELECT wake_dispatchers(ARRAY['sms'], %s, %s)", (WAKE_QUEUE, WAKE_TASK))

        async def fay_texted() -> bool:
            return len(w.providers.to("sms-fallback")) == 1

        await wait_until(fay_texted, 15, "Fay's SMS")

        async def settled() -> bool:
            erin = counts_of(await w.status(erin_event), "sms")
            return bool(erin["suppressed"]["seen"] == 1)

        # Once Erin's SMS is suppressed as seen, no second SMS can come.
        await wait_until(settled, 10, "Erin's SMS to be suppressed as seen")
        assert [s.body["to"] for s in w.providers.to("sms-fallback")] == ["+155501002"]
        assert [s.body["to"] for s in w.providers.to("sms-primary")] == ["+155501002"]
        assert "o-2" in w.providers.to("sms-fallback")[0].body["text"]

        cur = await db.execute(
            "SELECT a.provider, a.outcome FROM delivery_attempts a"
            " JOIN outbox o ON o.id = a.outbox_id WHERE o.consumer = 'sms'"
        )
        assert await cur.fetchall() == [("sms-fallback", "delivered")]

        fay = counts_of(await w.settled_status(fay_event, sms=1), "sms")
        assert (fay["sent"], fay["suppressed"]["seen"]) == (1, 0)
        erin_push = counts_of(await w.status(erin_event), "push")
        assert (erin_push["sent"], erin_push["seen"]) == (1, 1)
