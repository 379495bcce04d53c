"""Bounds on a request's head: how many headers, and how many bytes of them.

Two layers, because neither is enough alone:

- `headers_too_large(scope)`, checked first thing by MarkNotifyApp (service/app.py) for
  every request, the bare POST /v1/seen included: over MAX_HEADERS headers or
  MAX_HEADER_BYTES bytes of names and values is a 431 `headers_too_large`, under any
  server. It costs one len() and one short sum per request.
- `BoundedHttpToolsProtocol`, uvicorn's httptools protocol with a bound on what it
  buffers before the head is complete. httptools (what uvicorn's `--http auto` picks)
  has no limit of its own, so without this a 1 GB header is read into memory before the
  application can refuse it. It counts the head's own bytes only (request line to blank
  line): a body, or the next pipelined request, arriving in the same read is not head.
  Run uvicorn with
  `--http service.http_limits:BoundedHttpToolsProtocol` (bin/dev does; see docs/security.md).
  h11 (`--http h11`) has its own bound, `--h11-max-incomplete-event-size` (16 KiB by
  default), and the ASGI check counts the headers.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol

from starlette.types import Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import api_error
from service.http import encode, error_body

# Browsers send ~10-20 headers and proxies add a few; a JWT is 1-2 KiB. nginx's default
# buffers (4 x 8 KiB) and h11's 16 KiB are the same order.
MAX_HEADERS = 100
MAX_HEADER_BYTES = 16 * 1024
# The protocol layer counts raw bytes of the head (request line and CRLFs included), so it
# allows for those on top of what the ASGI check counts.
MAX_HEAD_BYTES = 2 * MAX_HEADER_BYTES
# Headers, the request line and the blank line.
MAX_HEAD_LINES = MAX_HEADERS + 2
# Ends a head, and a chunked body (its last chunk, or its trailers).
BLANK_LINE = b"\r\n\r\n"
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


# Called when uvicorn starts a graceful shutdown, before it waits for responses to end: a
# response that never ends by itself (the live inbox stream) ends then. Weak, so an app
# that is gone (tests build many) is not kept alive or called.
_SHUTDOWN_HOOKS: weakref.WeakSet[ShutdownAware] = weakref.WeakSet()


class ShutdownAware(Protocol):
    def server_stopping(self) -> None: ...


def on_shutdown(target: ShutdownAware) -> None:
    _SHUTDOWN_HOOKS.add(target)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a head over MAX_HEAD_BYTES bytes or
    MAX_HEADERS headers with 431 and closing the connection, before buffering more.

    A read can hold the end of one message, a whole head and part of a body: each read
    is fed to the parser in pieces that end where a head, or a body, ends, and only the
    pieces fed while a head is incomplete count against the bounds. Lines are counted
    from the raw bytes (a header is one line: llhttp refuses a bare LF or a folded line),
    which spares a Python call per header."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_lines = 0
        # The last bytes of an unfinished head or chunked body: a blank line may straddle
        # two reads.
        self._tail = b""
        # Bytes of a Content-Length body still to come; None for a chunked one.
        self._body_left: int | None = 0
        self._refused = False

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._tail = b""
        # llhttp has checked the framing: one valid Content-Length, or chunked (never both).
        length = 0
        for name, value in self.headers:
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                self._body_left = None
                break
        else:
            self._body_left = length
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = self._head_lines = 0
        self._tail = b""
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        end = len(data)
        pos = 0
        while pos < end:
            if self._in_head or self._body_left is None:
                # Up to the end of the first blank line from pos (which may begin in the
                # last read), else all of it.
                tail = self._tail
                if tail and (at := (tail + data[pos : pos + 3]).find(BLANK_LINE)) >= 0:
                    stop = pos + at + 4 - len(tail)
                    self._tail = b""
                elif (at := data.find(BLANK_LINE, pos)) >= 0:
                    stop = at + 4
                    self._tail = b""
                else:
                    stop = end
                    self._tail = data[-3:] if end - pos >= 3 else (tail + data[pos:])[-3:]
                if self._in_head:
                    self._head_bytes += stop - pos
                    self._head_lines += data.count(b"\n", pos, stop)
                    if self._head_bytes > MAX_HEAD_BYTES or self._head_lines > MAX_HEAD_LINES:
                        self._refuse()
                        return
            elif self._body_left:
                stop = min(end, pos + self._body_left)
                self._body_left -= stop - pos
            else:
                stop = end  # not expected (a body of 0 bytes ends with its head): as uvicorn
            super().data_received(data if pos == 0 and stop == end else data[pos:stop])
            # After a 400 or a protocol upgrade the rest of the read is not HTTP to parse.
            if stop < end and (self.transport.is_closing() or self.parser.should_upgrade()):
                return
            pos = stop

    def shutdown(self) -> None:
        for target in list(_SHUTDOWN_HOOKS):
            target.server_stopping()
        super().shutdown()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refused and self.cycle.response_complete:
            self._unset_keepalive_if_required()
            self._answer_refusal()

    def _refuse(self) -> None:
        self._refused = True
        # Requests pipelined before this head are answered first (on_response_complete).
        if self.cycle is None or self.cycle.response_complete:
            self._answer_refusal()

    def _answer_refusal(self) -> None:
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
