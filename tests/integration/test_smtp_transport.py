"""The SMTP transport against a real SMTP server (aiosmtpd), and email through the dispatcher."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dispatcher.smtp_transport import SmtpTransport
from dispatcher.transport_base import Delivery, Outcome
from service.config.base import ConfigError
from service.config.load import Config, parse_config
from service.notify.catalog import sync_catalog
from service.notify.preference_center import read_token as preference_link
from service.notify.templates import load_templates
from service.notify.unsubscribe import Unsubscribe, read_token
from service.sql import q
from tests.consumers import running, wait_until
from tests.smtp_server import Rule, SmtpServer, make_certificates, smtp_server
from tests.support import config_data, free_port, notify_data

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

EPISODE = {"series": "Dark", "episode": 3, "title": "Past and Present", "url": "https://x/e3"}
NO_DATABASE = "postgresql://nobody@127.0.0.1:9/none"


def email_config(
    port: int, *, smtp: dict[str, Any] | None = None, **channel: Any
) -> dict[str, Any]:
    """The test config's data with its email channel at this port, adjusted."""
    data = config_data(NO_DATABASE, **notify_data(smtp_port=port))
    email = data["channels"]["email"]
    email |= channel
    email["smtp"] |= smtp or {}
    return data


def transport(port: int, *, smtp: dict[str, Any] | None = None, **channel: Any) -> SmtpTransport:
    config = parse_config(email_config(port, smtp=smtp, **channel), "test-config")
    return SmtpTransport(
        {"email": config.channels["email"]},
        config.notify,
        load_templates(config),
        environment=config.environment,
    )


def delivery(
    n: int,
    *,
    email: str | None = "anna@x.test",
    type_: str = "new_episode",
    data: dict[str, Any] | None = None,
    event_id: str | None = None,
    locale: str = "en",
) -> Delivery:
    transactional = type_ in ("registration_confirmation", "payment_receipt")
    category = {"registration_confirmation": "account", "payment_receipt": "billing"}
    return Delivery(
        outbox_id=n,
        event_id=event_id or str(uuid.uuid4()),
        consumer="email",
        ordering_key="anna",
        payload={
            "notification_id": 1000 + n,
            "event_id": str(uuid.uuid4()),
            "type": type_,
            "category": category.get(type_, "content"),
            "transactional": transactional,
            "user_id": "anna",
            "locale": locale,
            "data": EPISODE if data is None else data,
            "escalation": False,
            "email": email,
            "phone": None,
            "devices": None,
        },
        attempt=1,
        created_at=datetime.now(UTC),
    )


async def send(smtp: SmtpTransport, batch: Sequence[Delivery]) -> dict[int, Outcome]:
    outcomes = await smtp.deliver("email", batch)
    assert sorted(o.outbox_id for o in outcomes) == sorted(d.outbox_id for d in batch)
    return {o.outbox_id: o for o in outcomes}


async def test_a_notification_arrives_as_a_multipart_email_with_every_header() -> None:
    async with smtp_server() as server:
        smtp = transport(server.port, smtp={"reply_to": "help@test.example"})
        row = delivery(1)
        try:
            outcomes = await send(smtp, [row])
        finally:
            await smtp.close()
    assert (outcomes[1].kind, outcomes[1].status_code, outcomes[1].error) == (
        "delivered",
        250,
        None,
    )
    [mail] = server.mails
    assert (mail.mail_from, mail.rcpt_tos) == ("n@test.example", ["anna@x.test"])
    message = mail.message
    assert message["From"] == "Notify <n@test.example>"
    assert message["Reply-To"] == "help@test.example"
    assert message["To"] == "anna@x.test"
    assert message["Subject"] == "New episode of Dark: Past and Present"
    sent_at = parsedate_to_datetime(message["Date"])
    assert abs(sent_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert message["Message-ID"] == f"<{row.event_id}@test.example>"
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert 'Episode 3 of Dark, "Past and Present", is out now.' in text.get_content()
    assert '<a href="https://x/e3">Watch it</a>' in html.get_content()
    # RFC 8058: the link in the header is the one in the body, and it names this user.
    link = message["List-Unsubscribe"]
    assert link.startswith("<http://127.0.0.1:9/v1/unsubscribe/") and link.endswith(">")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = link[1:-1]
    assert f"Unsubscribe: {url}" in text.get_content()
    config = parse_config(email_config(server.port), "test-config")
    token = url.rsplit("/", 1)[1]
    assert read_token(config.notify, token, environment="test") == Unsubscribe(
        "anna", "content", "email"
    )
    # The footer's other link: Anna's preference center, in the text and the HTML alike.
    manage = re.search(r"Manage notifications: (\S+)", text.get_content())
    assert manage is not None
    prefix = "http://127.0.0.1:9/v1/preferences/manage/"
    assert manage[1].startswith(prefix)
    assert f'<a href="{manage[1]}">Manage notifications</a>' in html.get_content()
    assert preference_link(config.notify, manage[1].removeprefix(prefix), environment="test") == (
        "anna"
    )


async def test_every_retry_of_a_row_carries_the_same_message_id() -> None:
    async with smtp_server() as server:
        smtp = transport(server.port, smtp={"message_id_domain": "mail.example"})
        row = delivery(1)
        try:
            await send(smtp, [row])
            await send(smtp, [row])
            await send(smtp, [delivery(2)])
        finally:
            await smtp.close()
    ids = [m.message["Message-ID"] for m in server.mails]
    assert ids[0] == ids[1] == f"<{row.event_id}@mail.example>"
    assert ids[2] != ids[0]


async def test_data_is_shown_as_text_never_run_as_template_code() -> None:
    data = EPISODE | {
        "series": "{{ 7*7 }} <b>Dark</b> & co",
        # A line break in data must not end the Subject header and start another.
        "title": "Past\r\nBcc: eve@evil.test",
    }
    async with smtp_server() as server:
        smtp = transport(server.port)
        try:
            outcomes = await send(smtp, [delivery(1, data=data)])
        finally:
            await smtp.close()
    assert outcomes[1].kind == "delivered"
    [mail] = server.mails
    assert mail.rcpt_tos == ["anna@x.test"]
    message = mail.message
    assert message["Bcc"] is None
    assert (
        message["Subject"] == "New episode of {{ 7*7 }} <b>Dark</b> & co: Past Bcc: eve@evil.test"
    )
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert "of {{ 7*7 }} <b>Dark</b> & co," in text.get_content()
    assert "<b>{{ 7*7 }} &lt;b&gt;Dark&lt;/b&gt; &amp; co</b>" in html.get_content()
    # 49 as a word: the signed unsubscribe token may contain the digits by chance.
    rendered = text.get_content() + html.get_content() + message["Subject"]
    assert re.search(r"(?<![\w-])49(?![\w-])", rendered) is None


async def test_non_ascii_text_and_addresses_travel_as_7bit_mime() -> None:
    series = " ".join(["Тьма"] * 30)  # a subject too long for one header line
    async with smtp_server() as server:
        smtp = transport(server.port, smtp={"sender": "Уведомления <n@test.example>"})
        try:
            outcomes = await send(
                smtp,
                [
                    delivery(
                        1, locale="ru", email="anna@пример.test", data=EPISODE | {"series": series}
                    )
                ],
            )
        finally:
            await smtp.close()
    assert outcomes[1].kind == "delivered"
    [mail] = server.mails
    assert mail.rcpt_tos == ["anna@xn--e1afmkfd.test"]
    # Any server can take it: ASCII only (no 8BITMIME needed), no line over RFC 5322's limit.
    assert mail.raw.isascii()
    assert max(len(line) for line in mail.raw.split(b"\r\n")) <= 998
    message = mail.message
    assert message["From"] == "Уведомления <n@test.example>"
    assert message["Subject"] == f"Новая серия «{series}»: Past and Present"
    text = message.get_body(("plain",))
    assert text is not None
    assert f"Вышла 3-я серия «{series}» — «Past and Present»." in text.get_content()
    link = message["List-Unsubscribe"]
    assert f"Отписаться: {link[1:-1]}" in text.get_content()


async def test_only_non_transactional_email_offers_unsubscribe() -> None:
    confirm = {"name": "Anna", "confirm_url": "https://x/confirm"}
    async with smtp_server() as server:
        smtp = transport(server.port)
        try:
            outcomes = await send(
                smtp,
                [delivery(1), delivery(2, type_="registration_confirmation", data=confirm)],
            )
        finally:
            await smtp.close()
    assert {o.kind for o in outcomes.values()} == {"delivered"}
    by_subject = {m.message["Subject"]: m.message for m in server.mails}
    confirmation = by_subject["Confirm your registration"]
    assert confirmation["List-Unsubscribe"] is None
    assert confirmation["List-Unsubscribe-Post"] is None
    episode = by_subject["New episode of Dark: Past and Present"]
    assert episode["List-Unsubscribe"] is not None


async def test_connections_are_reused_within_and_across_batches() -> None:
    async with smtp_server() as server:
        smtp = transport(server.port, concurrency=4)
        try:
            first = await send(smtp, [delivery(n) for n in range(50)])
            sessions_after_first = len(server.sessions)
            second = await send(smtp, [delivery(n) for n in range(50, 100)])
        finally:
            await smtp.close()
    assert {o.kind for o in [*first.values(), *second.values()]} == {"delivered"}
    assert len(server.mails) == 100
    assert 1 <= sessions_after_first <= 4
    assert len(server.sessions) == sessions_after_first
    # Closing the transport says goodbye on every connection it kept.
    assert server.quits == sessions_after_first


async def test_an_idle_connection_is_closed_after_the_idle_timeout() -> None:
    async with smtp_server() as server:
        smtp = transport(server.port, concurrency=2, smtp={"idle_timeout": 0.3})
        try:
            await send(smtp, [delivery(1), delivery(2)])
            assert server.open_sessions >= 1

            async def all_closed() -> bool:
                return server.open_sessions == 0

            waited = await wait_until(all_closed, 5, "idle SMTP sessions to close")
            assert waited >= 0.1
            assert server.quits == len(server.sessions)
            outcomes = await send(smtp, [delivery(3)])
        finally:
            await smtp.close()
    assert outcomes[3].kind == "delivered"
    assert len(server.mails) == 3


async def test_a_connection_the_server_dropped_is_replaced_without_a_retry() -> None:
    async with smtp_server() as server:
        smtp = transport(server.port, concurrency=1)
        try:
            await send(smtp, [delivery(1)])
            server.drop_sessions()
            await asyncio.sleep(0.05)  # the client has seen the close
            outcomes = await send(smtp, [delivery(2)])
            server.drop_sessions()
            # No turn of the event loop for the client to see it: MAIL meets a closed socket.
            outcomes |= await send(smtp, [delivery(3)])
        finally:
            await smtp.close()
    assert [outcomes[n].kind for n in (2, 3)] == ["delivered", "delivered"]
    assert [m.session for m in server.mails] == [1, 2, 3]


async def test_a_421_goodbye_on_a_reused_connection_is_replaced_without_a_retry() -> None:
    async with smtp_server() as server:
        smtp = transport(server.port, concurrency=1)
        try:
            await send(smtp, [delivery(1)])
            server.mail_replies = ["421 4.4.2 smtp.test Error: timeout exceeded"]
            outcomes = await send(smtp, [delivery(2)])
            # On a new connection a 421 is the server's answer to this message: retried.
            server.mail_replies = ["421 4.3.2 shutting down"] * 2
            server.drop_sessions()
            await asyncio.sleep(0.05)
            refused = await send(smtp, [delivery(3)])
        finally:
            await smtp.close()
    assert outcomes[2].kind == "delivered"
    assert [m.session for m in server.mails] == [1, 2]
    assert (refused[3].kind, refused[3].status_code) == ("retry", 421)


async def test_the_servers_reply_decides_between_retry_and_failure() -> None:
    async with smtp_server() as server:
        server.rules = {
            "busy@x.test": Rule("DATA", "451 4.3.0 busy@x.test: try again later"),
            "gone@x.test": Rule("RCPT", "550 5.1.1 <gone@x.test>: no such user"),
            "big@x.test": Rule("DATA", "552 5.3.4 message too big"),
            "full@x.test": Rule("RCPT", "452 4.2.2 mailbox full"),
        }
        smtp = transport(server.port, concurrency=1)
        batch = [
            delivery(1, email="busy@x.test"),
            delivery(2, email="gone@x.test"),
            delivery(3, email="big@x.test"),
            delivery(4, email="full@x.test"),
            delivery(5),
        ]
        try:
            outcomes = await send(smtp, batch)
        finally:
            await smtp.close()
    got = {n: (o.kind, o.status_code) for n, o in outcomes.items()}
    assert got == {
        1: ("retry", 451),
        2: ("failed", 550),
        3: ("failed", 552),
        4: ("retry", 452),
        5: ("delivered", 250),
    }
    assert outcomes[1].error == "SMTP 451 at DATA: 4.3.0 <recipient>: try again later"
    assert outcomes[2].error == "SMTP 550 at RCPT: 5.1.1 <<recipient>>: no such user"
    # A refusal costs the message, not the connection.
    assert len(server.sessions) == 1
    assert [m.rcpt_tos for m in server.mails] == [["anna@x.test"]]


async def test_a_server_that_is_down_means_retry() -> None:
    smtp = transport(free_port())
    try:
        outcomes = await send(smtp, [delivery(1), delivery(2)])
    finally:
        await smtp.close()
    assert {o.kind for o in outcomes.values()} == {"retry"}
    assert outcomes[1].error is not None and outcomes[1].error.startswith("connecting to")
    assert outcomes[1].status_code is None


async def test_a_stalling_server_is_cut_off_at_the_channel_timeout() -> None:
    async with smtp_server() as server:
        server.rules = {"slow@x.test": Rule("DATA", "250 OK", delay=5)}
        smtp = transport(server.port, timeout=0.5)
        t0 = time.monotonic()
        try:
            outcomes = await send(smtp, [delivery(1, email="slow@x.test"), delivery(2)])
        finally:
            await smtp.close()
    assert time.monotonic() - t0 < 3
    assert (outcomes[1].kind, outcomes[1].error) == ("retry", "timeout")
    assert outcomes[2].kind == "delivered"


async def test_what_cannot_be_rendered_or_addressed_fails_without_a_connection() -> None:
    async with smtp_server() as server:
        smtp = transport(server.port)
        no_title = {k: v for k, v in EPISODE.items() if k != "title"}
        batch = [
            delivery(1, data=no_title),
            delivery(2, email="not-an-address"),
            delivery(3, email="anna@x.test\r\nRCPT TO:<eve@evil.test>"),
            delivery(4, email=None),
            delivery(5, type_="no_such_type"),
        ]
        try:
            outcomes = await send(smtp, batch)
        finally:
            await smtp.close()
    assert {o.kind for o in outcomes.values()} == {"failed"}
    errors = {n: o.error or "" for n, o in outcomes.items()}
    assert "'title' is undefined" in errors[1] and errors[1].startswith("template error")
    assert errors[2] == errors[3] == "invalid email address"
    assert errors[4] == "the user has no email address"
    assert errors[5] == "no templates for notification type 'no_such_type'"
    assert server.sessions == [] and server.mails == []


async def test_starttls_with_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    context, ca_file = make_certificates(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    async with smtp_server(starttls=context, require_login=True) as server:
        login = {"starttls": True, "username": "mailer", "password": "s3cret"}
        smtp = transport(server.port, smtp=login)
        wrong = transport(server.port, smtp=login | {"password": "guess"})
        try:
            outcomes = await send(smtp, [delivery(1)])
            refused = await send(wrong, [delivery(2)])
        finally:
            await smtp.close()
            await wrong.close()
    assert outcomes[1].kind == "delivered"
    assert [(m.tls, m.login) for m in server.mails] == [(True, "mailer")]
    # A refused login is the configuration's problem, not the message's: retried.
    assert refused[2].kind == "retry"
    assert "535" in (refused[2].error or "")


async def test_implicit_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    context, ca_file = make_certificates(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    async with smtp_server(implicit_tls=context) as server:
        smtp = transport(server.port, smtp={"tls": True})
        try:
            outcomes = await send(smtp, [delivery(1)])
        finally:
            await smtp.close()
        plain = transport(server.port, timeout=0.5)
        try:
            # Plain SMTP to a TLS port never gets a greeting it understands.
            refused = await send(plain, [delivery(2)])
        finally:
            await plain.close()
    assert outcomes[1].kind == "delivered"
    assert [m.tls for m in server.mails] == [True]
    assert refused[2].kind == "retry"


def test_no_or_a_development_unsubscribe_secret_is_refused_at_start() -> None:
    data = email_config(9)
    data["notify"]["unsubscribe_secret"] = "dev-only-unsubscribe-secret-0123456789"
    # Parsing refuses it already outside development (tests/unit/test_config.py).
    data["environment"] = "development"
    config = parse_config(data, "test-config")
    templates = load_templates(config)
    with pytest.raises(ConfigError, match="development secret"):
        SmtpTransport(config.channels, config.notify, templates, environment="production")
    # In development it is the expected secret.
    SmtpTransport(config.channels, config.notify, templates, environment="development")
    del data["notify"]["unsubscribe_secret"]
    config = parse_config(data, "test-config")
    with pytest.raises(ConfigError, match="unsubscribe_secret: required"):
        SmtpTransport(config.channels, config.notify, templates)


# --- through the dispatcher ---------------------------------------------------------------


def dispatch_config(db_url: str, server: SmtpServer) -> Config:
    """The test config with email at this server; SMS and push are off, so that the
    event's only remote channel is email."""
    data = config_data(db_url, **notify_data(smtp_port=server.port))
    for name in ("sms", "push"):
        data["channels"][name]["enabled"] = False
    return parse_config(data, "test-config")


async def accept_event(db: Conn, type_: str, user_ids: list[str], data: dict[str, Any]) -> str:
    cur = await db.execute(
        q("accept_event"),
        {
            "producer": "content",
            "idempotency_key": str(uuid.uuid4()),
            "type": type_,
            "recipients": json.dumps({"user_ids": user_ids}),
            "data": json.dumps(data),
            "send_at": None,
            "chunk": 1000,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def test_an_accepted_event_is_emailed_by_the_dispatcher(db: Conn, db_url: str) -> None:
    async with smtp_server() as server:
        config = dispatch_config(db_url, server)
        await sync_catalog(db, config, load_templates(config))
        await db.execute(
            "INSERT INTO users (id, email, locale) VALUES ('anna', 'anna@x.test', 'en'),"
            " ('ben', 'ben@x.test', NULL)"
        )
        await accept_event(db, "new_episode", ["anna", "ben"], EPISODE)
        async with running(config, db_url):
            mails = await server.wait_for(2)

            async def recorded() -> bool:
                cur = await db.execute(
                    "SELECT count(*) FROM outbox WHERE consumer = 'email' AND status = 'delivered'"
                )
                row = await cur.fetchone()
                return row is not None and row[0] == 2

            await wait_until(recorded, 10, "both email rows delivered")
    assert sorted(m.rcpt_tos[0] for m in mails) == ["anna@x.test", "ben@x.test"]
    cur = await db.execute(
        "SELECT o.event_id::text, n.user_id, a.attempt, a.outcome, a.status_code, a.error"
        " FROM outbox o JOIN notifications n ON n.id = o.notification_id"
        " JOIN delivery_attempts a ON a.outbox_id = o.id WHERE o.consumer = 'email'"
    )
    attempts = {user: rest for event_id, user, *rest in await cur.fetchall()}
    assert attempts == {"anna": [1, "delivered", 250, None], "ben": [1, "delivered", 250, None]}
    cur = await db.execute(
        "SELECT n.user_id, o.event_id::text FROM outbox o"
        " JOIN notifications n ON n.id = o.notification_id WHERE o.consumer = 'email'"
    )
    event_ids: dict[str, str] = dict(await cur.fetchall())
    by_user = {"anna" if m.rcpt_tos == ["anna@x.test"] else "ben": m.message for m in mails}
    for user, message in by_user.items():
        assert message["Message-ID"] == f"<{event_ids[user]}@test.example>"
        assert message["Subject"] == "New episode of Dark: Past and Present"
        assert message["List-Unsubscribe"] is not None
