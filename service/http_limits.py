"""Bounds on a request's head: how many headers, and how many bytes of them.

Two layers, because neither is enough alone:

- `headers_too_large(scope)`, checked first thing by MarkNotifyApp (service/app.py) for
  every request, the bare POST /v1/seen included: over MAX_HEADERS headers or
  MAX_HEADER_BYTES bytes of names and values is a 431 `headers_too_large`, under any
  server. It costs one len() and one short sum per request.
- `BoundedHttpToolsProtocol`, uvicorn's httptools protocol with a bound on what it
  buffers before the head is complete. httptools (what uvicorn's `--http auto` picks)
  has no limit of its own, so without this a 1 GB header is read into memory before the
  application can refuse it. Run uvicorn with
  `--http service.http_limits:BoundedHttpToolsProtocol` (bin/dev does; see docs/security.md).
  h11 (`--http h11`) has its own bound, `--h11-max-incomplete-event-size` (16 KiB by
  default), and the ASGI check counts the headers.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import api_error
from service.http import encode, error_body

# Browsers send ~10-20 headers and proxies add a few; a JWT is 1-2 KiB. nginx's default
# buffers (4 x 8 KiB) and h11's 16 KiB are the same order.
MAX_HEADERS = 100
MAX_HEADER_BYTES = 16 * 1024
# The protocol layer counts raw bytes of the head (request line and CRLFs included) and
# reads in chunks, so it stops a little later than the ASGI check would.
MAX_HEAD_BYTES = 2 * MAX_HEADER_BYTES
REFUSED_LINGER_S = 2.0


def headers_too_large(scope: Scope) -> bool:
    headers = scope["headers"]
    if len(headers) > MAX_HEADERS:
        return True
    return sum(len(name) + len(value) for name, value in headers) > MAX_HEADER_BYTES


def _refusal() -> bytes:
    error = api_error("headers_too_large")
    return encode(error_body(error))


async def refuse_headers(send: Send) -> None:
    """Answer 431 `headers_too_large` as a bare ASGI response (the body is not read)."""
    payload = _refusal()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 431, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a head over MAX_HEAD_BYTES bytes or
    MAX_HEADERS headers with 431 and closing the connection, before buffering more."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes received while a head is incomplete; None once it is (the body follows).
        self._head_bytes: int | None = 0
        self._header_count = 0
        self._refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            self._refused = True
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        if self._refused:
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._head_bytes = 0
        if self._refused:
            return
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._head_bytes is not None:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse()
                return
        super().data_received(data)
        if self._refused:
            self._refuse()

    def _refuse(self) -> None:
        self._refused = True
        payload = _refusal()
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(payload)).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        if self.transport.is_closing():
            return
        self.transport.write(head + payload)
        # Closing a socket with unread input sends a reset, which can destroy the answer
        # before the client reads it: half-close instead, discard what still arrives, and
        # close for good when the client does, or after a grace period.
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(REFUSED_LINGER_S, self.transport.close)
        else:
            self.transport.close()
