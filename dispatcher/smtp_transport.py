"""SMTP transport: each notification as one multipart email, over reused connections.

Per channel, a pool of at most `concurrency` SMTP connections: a send takes the most
recently used idle connection or opens one (implicit TLS, STARTTLS and login as
configured), and gives it back afterwards. Connections live across batches; one idle for
`smtp.idle_timeout` is closed, and one that fails is dropped. When the server has closed
an idle connection before a message began, the message goes on a new one at once; once a
message has begun, a failure is an Outcome and the claim loop's retry sends it again.

A message is `multipart/alternative` (text and HTML from the type's templates) with a
`Message-ID` made of the outbox row's event id, so every retry of one notification
carries the same id. Every email's templates get `preferences_url`, the user's link to
the preference center (service/notify/preference_center.py); a non-transactional
category also gets RFC 8058's one-click `List-Unsubscribe` (service/notify/unsubscribe.py).
Outcomes: 2xx delivered, 4xx and connection trouble retried, 5xx failed; a notification
that cannot be rendered or has no valid address fails at once. Addresses and content are
never logged, and server replies are stored with the recipient's address blanked out.
"""

from __future__ import annotations

import asyncio
import binascii
import email.policy
import re
import socket
import ssl
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError, MessageDefect
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import aiosmtplib

from dispatcher.retry import timed_outcome, undeliverable
from dispatcher.transport_base import Delivery, Outcome, OutcomeKind, Transport
from service.config.base import ConfigError
from service.config.notify import Channel, NotifySettings, SmtpSettings
from service.notify.preference_center import preferences_url
from service.notify.templates import RenderError, TypeTemplates
from service.notify.unsubscribe import signing_key, unsubscribe_url

# How long a connection being retired may take to say goodbye.
QUIT_TIMEOUT_S = 2.0
# Refusals per SMTP command, as aiosmtplib raises them.
_STAGES: tuple[tuple[type[aiosmtplib.SMTPResponseException], str], ...] = (
    (aiosmtplib.SMTPSenderRefused, "MAIL"),
    (aiosmtplib.SMTPRecipientRefused, "RCPT"),
    (aiosmtplib.SMTPDataError, "DATA"),
)


# RFC 5322's limit on a line, CRLF excluded.
MAX_LINE = 998
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Configured address headers are checked and folded once, by the email package.
_HEADER_POLICY = email.policy.SMTP.clone(linesep="\n")


class Undeliverable(ValueError):
    """This notification cannot be sent as an email, now or on any retry."""


class _Unreachable(Exception):
    """No usable connection to the server: nothing of the message was sent."""


def _tls_context() -> ssl.SSLContext:
    # Per transport rather than cached for the process: it reads the CA store (and
    # SSL_CERT_FILE) when made, which tests point at their own certificate authority.
    return ssl.create_default_context()


def _recipient(address: Any) -> str:
    """The envelope and To address, or Undeliverable. An internationalized domain is
    IDNA-encoded; a non-ASCII local part would need SMTPUTF8, which is not offered."""
    if not isinstance(address, str) or not address.strip():
        raise Undeliverable("the user has no email address")
    address = address.strip()
    if any(c in address for c in "\r\n\0<>,;") or any(c.isspace() for c in address):
        raise Undeliverable("invalid email address")
    try:
        parsed = Address(addr_spec=address)
    except (ValueError, IndexError, HeaderParseError, MessageDefect):
        raise Undeliverable("invalid email address") from None
    local, domain = parsed.username, parsed.domain
    if not local or not domain or "." not in domain.strip("."):
        raise Undeliverable("invalid email address")
    if not local.isascii():
        raise Undeliverable("the email address needs SMTPUTF8, which is not supported")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise Undeliverable("invalid email address (domain)") from None
    return f"{local}@{domain}"


def _address_header(name: str, value: str, where: str) -> tuple[str, str]:
    """A configured address header as it goes on the wire, and its address."""
    probe = EmailMessage(policy=_HEADER_POLICY)
    try:
        probe[name] = value
        header = probe[name]
        addresses = header.addresses
    except (ValueError, IndexError, HeaderParseError, MessageDefect) as exc:
        raise ConfigError(f"{where}: not an email address ({exc})") from None
    if len(addresses) != 1 or not addresses[0].username or not addresses[0].domain:
        raise ConfigError(f"{where}: not one email address")
    return _HEADER_POLICY.fold(name, header), addresses[0].addr_spec


def _subject(text: str) -> str:
    # One line, whatever the template and data hold: a line break in a header value
    # would be a header injection.
    line = " ".join(_CONTROL.sub(" ", text).split())
    # Plain ASCII that looks like an encoded word is encoded too, lest it be read as one.
    charset = "us-ascii" if line.isascii() and "=?" not in line else "utf-8"
    folded = Header(line, charset, header_name="Subject").encode(linesep="\n")
    return f"Subject: {folded}\n"


def _part(content_type: str, text: str) -> str:
    """One text part: 7bit when it is ASCII in lines SMTP can carry, else quoted-printable
    (so that no server needs 8BITMIME)."""
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    if body.isascii() and "\0" not in body and max(map(len, body.split("\n"))) <= MAX_LINE:
        encoding = "7bit"
    else:
        encoding = "quoted-printable"
        body = binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii")
    if not body.endswith("\n"):
        body += "\n"
    return (
        f'Content-Type: {content_type}; charset="utf-8"\n'
        f"Content-Transfer-Encoding: {encoding}\n\n{body}"
    )


def _redact(text: str, address: str) -> str:
    # Servers often echo the recipient in their replies; attempt rows keep no addresses.
    return re.sub(re.escape(address), "<recipient>", text, flags=re.IGNORECASE)


@dataclass(eq=False, slots=True)
class _Connection:
    smtp: aiosmtplib.SMTP
    idle_since: float = 0.0


class _Server:
    """One channel's SMTP server: its connection pool, message building and sending."""

    def __init__(
        self,
        name: str,
        channel: Channel,
        notify: NotifySettings,
        templates: Mapping[str, TypeTemplates],
        environment: str | None,
    ) -> None:
        assert channel.smtp is not None
        self.name = name
        self.settings: SmtpSettings = channel.smtp
        self.notify = notify
        self.templates = templates
        self.environment = environment
        self.timeout = channel.timeout.total_seconds()
        self.idle_timeout = self.settings.idle_timeout.total_seconds()
        self.slots = asyncio.Semaphore(channel.concurrency)
        # Most recently used on the right: sends take from the right, the reaper retires
        # from the left, so a pool shrinks back when load drops.
        self.idle: deque[_Connection] = deque()
        self.reaper: asyncio.Task[None] | None = None
        self.tls = _tls_context() if self.settings.tls or self.settings.starttls else None
        self.local_hostname: str | None = None
        where = f"channels.{name}.smtp"
        self.from_header, self.envelope_from = _address_header(
            "From", self.settings.sender, f"{where}.sender"
        )
        self.reply_to_header = ""
        if self.settings.reply_to:
            self.reply_to_header = _address_header(
                "Reply-To", self.settings.reply_to, f"{where}.reply_to"
            )[0]
        domain = self.settings.message_id_domain or self.envelope_from.rpartition("@")[2]
        if not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
            raise ConfigError(f"{where}.message_id_domain: {domain!r} is not an ASCII domain")
        self.message_id_domain = domain
        if not notify.public_url.isascii() or _CONTROL.search(notify.public_url):
            raise ConfigError("notify.public_url: an ASCII URL is needed (IDNA for the host)")

    # --- building ----------------------------------------------------------------------

    def compose(self, delivery: Delivery) -> tuple[str, bytes]:
        """The envelope recipient and the message, or Undeliverable."""
        payload = delivery.payload
        to = _recipient(payload.get("email"))
        type_name = payload.get("type")
        templates = self.templates.get(type_name) if isinstance(type_name, str) else None
        if templates is None:
            raise Undeliverable(f"no templates for notification type {type_name!r}")
        user_id = str(payload.get("user_id"))
        locale = payload.get("locale")
        data = payload.get("data")
        context: dict[str, Any] = dict(data) if isinstance(data, dict) else {}
        context |= {
            "recipient": {"id": user_id, "locale": locale},
            "notification_id": payload.get("notification_id"),
            "event_id": payload.get("event_id"),
            "preferences_url": preferences_url(self.notify, user_id, environment=self.environment),
        }
        link: str | None = None
        if not payload.get("transactional", False):
            link = unsubscribe_url(
                self.notify,
                user_id,
                str(payload.get("category")),
                channel=self.name,
                environment=self.environment,
            )
            context["unsubscribe_url"] = link
        try:
            parts = templates.render("email", locale, context)
        except RenderError as exc:
            raise Undeliverable(f"template error: {exc}") from None
        # Written out rather than built with email.message.EmailMessage, which spent over
        # a millisecond of CPU per message parsing back the headers it had just been given:
        # more than the SMTP exchange itself. Every value below is ASCII and one line.
        head = [
            self.from_header,
            self.reply_to_header,
            f"To: {to}\n",
            _subject(str(parts["subject"])),
            f"Date: {format_datetime(datetime.now(UTC))}\n",
            f"Message-ID: <{delivery.event_id}@{self.message_id_domain}>\n",
        ]
        if link is not None:
            # Never folded: a URL has no whitespace to fold at (RFC 8058, RFC 2369).
            head += [
                f"List-Unsubscribe: <{link}>\n",
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click\n",
            ]
        # "=_" cannot occur in quoted-printable text, and the rest cannot be guessed.
        boundary = f"=_{uuid.uuid4().hex}"
        head += [
            "MIME-Version: 1.0\n",
            f'Content-Type: multipart/alternative; boundary="{boundary}"\n\n',
        ]
        body = (
            f"--{boundary}\n{_part('text/plain', str(parts['text']))}"
            f"--{boundary}\n{_part('text/html', str(parts['html']))}"
            f"--{boundary}--\n"
        )
        try:
            raw = ("".join(head) + body).encode("ascii")
        except UnicodeEncodeError:
            raise Undeliverable("cannot build the message: a header is not ASCII") from None
        return to, raw.replace(b"\n", b"\r\n")

    # --- sending -----------------------------------------------------------------------

    async def send(self, delivery: Delivery) -> Outcome:
        try:
            to, message = self.compose(delivery)
        except Undeliverable as exc:
            return undeliverable(delivery, str(exc))
        async with self.slots:
            started_at = datetime.now(UTC)
            t0 = time.perf_counter()
            try:
                # Bounds the whole send (connecting included), so a server trickling its
                # replies cannot hold a row past the claim's lease.
                async with asyncio.timeout(self.timeout):
                    code = await self._transmit(to, message)
            except TimeoutError:
                return timed_outcome(delivery, "retry", started_at, t0, error="timeout")
            except _Unreachable as exc:
                error = _redact(str(exc), to)
                return timed_outcome(delivery, "retry", started_at, t0, error=error)
            except aiosmtplib.SMTPResponseException as exc:
                stage = next((s for kind, s in _STAGES if isinstance(exc, kind)), None)
                reply = _redact(f"SMTP {exc.code} at {stage}: {exc.message}", to)
                # A refused message (MAIL, RCPT or DATA) is judged by its code; any other
                # reply (a failed EHLO) is the session's trouble, not this message's.
                kind: OutcomeKind = (
                    "failed" if stage is not None and 500 <= exc.code < 600 else "retry"
                )
                return timed_outcome(delivery, kind, started_at, t0, error=reply, status=exc.code)
            except (aiosmtplib.SMTPException, OSError) as exc:
                error = _redact(f"connection: {exc}", to)
                return timed_outcome(delivery, "retry", started_at, t0, error=error)
        return timed_outcome(delivery, "delivered", started_at, t0, status=code)

    async def _transmit(self, to: str, message: bytes) -> int:
        """Send one message; the server's final reply code. Raises what went wrong."""
        connection, reused = await self._checkout()
        try:
            try:
                await connection.smtp.mail(self.envelope_from)
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPSenderRefused) as exc:
                closed = isinstance(exc, aiosmtplib.SMTPServerDisconnected) or exc.code == 421
                if not (reused and closed):
                    raise
                # The server ended the idle connection (its own idle limit; Postfix says 421
                # first) before this message began: nothing was sent, so a new one is safe.
                connection.smtp.close()
                connection = await self._connect()
                await connection.smtp.mail(self.envelope_from)
            await connection.smtp.rcpt(to)
            response = await connection.smtp.data(message)
        except aiosmtplib.SMTPResponseException:
            # A refusal leaves the session usable once the envelope is reset.
            await self._reset_or_drop(connection)
            raise
        except BaseException:
            # Cancelled or cut mid-command: the session's state is unknown.
            connection.smtp.close()
            raise
        self._checkin(connection)
        return response.code

    async def _reset_or_drop(self, connection: _Connection) -> None:
        if connection.smtp.is_connected:
            try:
                await connection.smtp.rset()
            except (aiosmtplib.SMTPException, OSError):
                connection.smtp.close()
            else:
                self._checkin(connection)
                return
        connection.smtp.close()

    async def _checkout(self) -> tuple[_Connection, bool]:
        """A connection for one send and whether it was reused."""
        now = time.monotonic()
        while self.idle:
            connection = self.idle.pop()
            if connection.smtp.is_connected and now - connection.idle_since < self.idle_timeout:
                return connection, True
            # Dead or past its idle limit; and so is every older one the reaper still holds.
            connection.smtp.close()
        return await self._connect(), False

    async def _connect(self) -> _Connection:
        settings = self.settings
        if self.local_hostname is None:
            # Resolved once: aiosmtplib would look it up again for every connection.
            self.local_hostname = await asyncio.to_thread(socket.getfqdn)
        smtp = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            use_tls=settings.tls,
            start_tls=settings.starttls,
            tls_context=self.tls,
            username=settings.username,
            password=settings.password,
            local_hostname=self.local_hostname,
            timeout=self.timeout,
        )
        try:
            await smtp.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            # A refused greeting, TLS or login is the server's or the config's trouble,
            # never the message's: retried, and counted by the channel's breaker.
            smtp.close()
            raise _Unreachable(f"connecting to {settings.host}:{settings.port}: {exc}") from None
        return _Connection(smtp)

    def _checkin(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        self.idle.append(connection)
        if self.reaper is None or self.reaper.done():
            self.reaper = asyncio.create_task(self._reap(), name=f"smtp-reaper-{self.name}")

    async def _reap(self) -> None:
        """Close connections idle for idle_timeout, while there are any."""
        while self.idle:
            wait = self.idle[0].idle_since + self.idle_timeout - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            await _quit(self.idle.popleft())

    async def close(self) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
            await asyncio.gather(self.reaper, return_exceptions=True)
            self.reaper = None
        idle = list(self.idle)
        self.idle.clear()
        await asyncio.gather(*(_quit(c) for c in idle))


async def _quit(connection: _Connection) -> None:
    try:
        async with asyncio.timeout(QUIT_TIMEOUT_S):
            await connection.smtp.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        pass
    finally:
        connection.smtp.close()


class SmtpTransport(Transport):
    """Delivers for every channel whose transport is "smtp".

    `environment` lets the signer refuse a development unsubscribe secret, as the API
    does when it checks the links; without it only the API refuses them.
    """

    def __init__(
        self,
        channels: Mapping[str, Channel],
        notify: NotifySettings,
        templates: Mapping[str, TypeTemplates],
        *,
        environment: str | None = None,
    ) -> None:
        # Without a secret no marketing email could carry its unsubscribe link: refuse to
        # start rather than fail every one of them.
        signing_key(notify, environment)
        self._servers = {
            name: _Server(name, channel, notify, templates, environment)
            for name, channel in channels.items()
            if channel.transport == "smtp"
        }

    def message(self, consumer: str, delivery: Delivery) -> tuple[str, bytes]:
        """The envelope recipient and the bytes of the email a delivery becomes, as
        deliver() would send them; raises Undeliverable."""
        return self._servers[consumer].compose(delivery)

    async def deliver(self, consumer: str, batch: Sequence[Delivery]) -> list[Outcome]:
        server = self._servers[consumer]
        return list(await asyncio.gather(*(server.send(d) for d in batch)))

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self._servers.values()))
