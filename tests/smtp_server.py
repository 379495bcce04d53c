"""A real SMTP server for tests (aiosmtpd), in the test's own event loop.

It records every message it accepts, parsed, and every SMTP session it saw, and can be
told to refuse or stall chosen recipients, to require STARTTLS or login, or to speak TLS
from the first byte (with a certificate authority made for the test).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.consumers import patience

HOSTNAME = "smtp.test"


@dataclass(frozen=True, slots=True)
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    session: int  # which session (1-based, in order of connection) carried it
    tls: bool
    login: str | None


@dataclass(frozen=True, slots=True)
class Rule:
    stage: str  # "RCPT" or "DATA"
    reply: str
    delay: float = 0.0


@dataclass
class SmtpServer:
    """What the server saw, and how it answers (set `rules` before sending)."""

    port: int = 0
    mails: list[Mail] = field(default_factory=list)
    # Recipient address -> how to answer it; everyone else gets 250.
    rules: dict[str, Rule] = field(default_factory=dict)
    sessions: list[Any] = field(default_factory=list)
    # Replies to the next MAIL commands, in order; a 421 also closes the session, as
    # Postfix does when a connection has idled past its limit.
    mail_replies: list[str] = field(default_factory=list)
    quits: int = 0
    logins: dict[str, str] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def open_sessions(self) -> int:
        return sum(1 for s in self.sessions if s.transport is not None)

    def drop_sessions(self) -> None:
        """Close every session from the server's side, as a server's idle limit would."""
        for session in self.sessions:
            if session.transport is not None:
                session.transport.close()

    async def wait_for(self, count: int, within: float = 10.0) -> list[Mail]:
        async with asyncio.timeout(patience(within)):
            while len(self.mails) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.mails

    # --- aiosmtpd handler hooks (aiosmtpd's names) ---------------------------------------

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self.mail_replies:
            reply = self.mail_replies.pop(0)
            if reply.startswith("421"):
                asyncio.get_running_loop().call_later(0.01, server.transport.close)
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        rule = self.rules.get(address)
        if rule is not None and rule.stage == "RCPT":
            await asyncio.sleep(rule.delay)
            return rule.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for address in envelope.rcpt_tos:
            rule = self.rules.get(address)
            if rule is not None and rule.stage == "DATA":
                await asyncio.sleep(rule.delay)
                return rule.reply
        raw: bytes = envelope.original_content or envelope.content
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.mails.append(
            Mail(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                raw=raw,
                message=parsed,
                session=next(n for n, s in enumerate(self.sessions, 1) if s is server),
                # session.ssl is set by STARTTLS only; implicit TLS shows on the transport.
                tls=session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
                login=self.logins.get(str(session.peer)),
            )
        )
        self.arrived.set()
        return "250 2.0.0 queued"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 Bye"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode()
        if (login, auth_data.password.decode()) != ("mailer", "s3cret"):
            return AuthResult(success=False, handled=False)
        self.logins[str(session.peer)] = login
        return AuthResult(success=True)


@asynccontextmanager
async def smtp_server(
    *,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    require_login: bool = False,
) -> AsyncIterator[SmtpServer]:
    """An SMTP server on a free loopback port for the duration of the block."""
    recorder = SmtpServer()
    loop = asyncio.get_running_loop()

    def session() -> Any:
        protocol = SMTP(
            recorder,
            hostname=HOSTNAME,
            loop=loop,
            tls_context=starttls,
            require_starttls=starttls is not None,
            auth_required=require_login,
            auth_require_tls=starttls is not None or implicit_tls is not None,
            authenticator=recorder.authenticate,
        )
        recorder.sessions.append(protocol)
        return protocol

    server = await loop.create_server(session, "127.0.0.1", 0, ssl=implicit_tls)
    recorder.port = server.sockets[0].getsockname()[1]
    try:
        yield recorder
    finally:
        server.close()
        recorder.drop_sessions()
        await server.wait_closed()


def make_certificates(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 and the file of the authority that signed it
    (point SSL_CERT_FILE at it so that clients trust it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mark-notify test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file = directory / "server.pem"
    cert_file.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file)
    return context, ca_file
