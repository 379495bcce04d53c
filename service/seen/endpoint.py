"""POST /v1/seen, the hot path: parse the body, check the caller may mark each tag, hand
the marks to the group committer, answer.

`post_seen` is a bare ASGI app that MarkNotifyApp (service/app.py) calls directly;
`record_seen` is the same endpoint on plain inputs, and `parse_seen` its body.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Mapping

import msgspec
from starlette.types import Receive, Scope, Send

from service.errors import ApiError, api_error, unknown_name_error
from service.http import (
    DECODE_ERRORS,
    ClientGone,
    check_json_headers,
    decode_error,
    encode,
    error_body,
    read_body,
)
from service.identity import ANONYMOUS, check_caller
from service.logs import log_request, request_context, request_id_from, seen_access_rate
from service.metrics import count_seen, observe_request
from service.seen.seen_wire import SeenBatchResult, SeenItem, SeenRequest, SeenResult
from service.seen.store import MarkRow, StorageUnavailable
from service.state import State
from service.text_rules import is_header_value
from service.tracing import new_trace, parse_traceparent

log = logging.getLogger(__name__)

_decode_seen = msgspec.json.Decoder(SeenRequest).decode


def parse_seen(body: bytes, max_batch: int) -> tuple[list[SeenItem], bool]:
    """The items of a seen request and whether it was the batch form."""
    try:
        request = _decode_seen(body)
    except DECODE_ERRORS as exc:
        raise decode_error(exc) from None
    if request.items is not None:
        if request.tag is not None or request.id is not None:
            raise api_error("invalid_body", "Send either `tag` and `id`, or `items`, not both.")
        if len(request.items) > max_batch:
            raise api_error("batch_too_large", f"At most {max_batch} items per request.")
        return list(request.items), True
    if request.tag is None or request.id is None:
        raise api_error("invalid_body", "Send `tag` and `id`, or a non-empty `items` list.")
    return [SeenItem(request.tag, request.id)], False


async def record_seen(
    state: State,
    headers: Mapping[str, str],
    peer: str | None,
    body: bytes,
    traceparent: str | None = None,
) -> SeenResult | SeenBatchResult:
    """POST /v1/seen on plain inputs: the answer, or an ApiError. `traceparent` (the
    API's span of the request) is stored with each outbox row it writes."""
    config = state.config
    caller = state.auth.authenticate(headers, peer)
    items, batch = parse_seen(body, config.api.max_batch)

    idempotency_key = headers.get("idempotency-key")
    if idempotency_key is not None and not is_header_value(idempotency_key, 255):
        raise api_error(
            "invalid_body", "Idempotency-Key must be 1 to 255 visible ASCII characters."
        )

    rows: list[MarkRow] = []
    for item in items:
        tag = config.tags.get(item.tag)
        if tag is None:
            raise unknown_name_error("unknown_tag", "tag", item.tag, config.tags)
        refusal = check_caller(caller, tag.event_type, item.tag)
        if refusal is not None:
            raise refusal
        if tag.event_type == "anonymous":
            # Anonymous marks have no subject; the client's Idempotency-Key, when sent, is
            # what makes a retry a repeat.
            subject_key = (
                f"anonymous:key:{idempotency_key}"
                if idempotency_key
                else f"anonymous:{uuid.uuid4().hex}"
            )
            mark_caller = ANONYMOUS
        else:
            subject_key = caller.key
            mark_caller = caller
        rows.append(
            MarkRow(
                tag=item.tag,
                item_id=item.id,
                subject_key=subject_key,
                subject_kind=tag.event_type,
                subject=mark_caller.subject,
                consumer=tag.consumer,
                remember_for_s=tag.remember_for.total_seconds(),
                traceparent=traceparent,
            )
        )

    try:
        new = await state.committer.submit(rows)
    except StorageUnavailable:
        raise state.unavailable() from None
    results = [
        SeenResult(r.tag, r.item_id, "recorded" if r.key in new else "duplicate") for r in rows
    ]
    # A batch may repeat a mark: only its first position is the one that was recorded.
    seen: set[tuple[str, str, str]] = set()
    for n, r in enumerate(rows):
        if r.key in seen:
            results[n] = SeenResult(r.tag, r.item_id, "duplicate")
        seen.add(r.key)
    count_seen(results)
    return SeenBatchResult(results) if batch else results[0]


_JSON_HEADER = (b"content-type", b"application/json")


async def post_seen(scope: Scope, receive: Receive, send: Send) -> None:
    """The hot endpoint as a bare ASGI app: no Request/Response objects, and (reached
    through MarkNotifyApp) no router or exception middlewares, which were most of the
    API's CPU per request. It answers every error itself, as JSON."""
    started = time.perf_counter()
    state: State = scope["app"].state.mn
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    request_id = request_id_from(headers.get("x-request-id"))
    parent = parse_traceparent(headers.get("traceparent"))
    trace = parent.child() if parent is not None else new_trace()
    context = request_context.set((request_id, trace.trace_id))
    extra: dict[str, str] = {}
    try:
        check_json_headers(headers, state.config.api.max_body_bytes)
        body = await read_body(receive, state.config.api.max_body_bytes)
        client = scope.get("client")
        answer: msgspec.Struct = await record_seen(
            state, headers, client[0] if client else None, body, trace.traceparent
        )
        status = 200
    except ClientGone:
        request_context.reset(context)
        observe_request("POST", "/v1/seen", None, started)
        return
    except ApiError as exc:
        status, answer, extra = exc.status, error_body(exc), exc.headers
    except Exception:
        log.exception("unhandled error on POST /v1/seen")
        error = api_error("internal_error")
        status, answer = error.status, error_body(error)
    payload = encode(answer)
    response_headers = [_JSON_HEADER, (b"content-length", str(len(payload)).encode())]
    response_headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
    response_headers.append((b"x-request-id", request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": payload})
    observe_request("POST", "/v1/seen", status, started)
    request_context.reset(context)
    # 200s are sampled unless the caller's trace is (docs/observability.md, Logs).
    sampled = parent is not None and parent.sampled
    rate = seen_access_rate()
    if status != 200 or sampled or rate >= 1.0 or random.random() < rate:  # noqa: S311
        log_request("POST", "/v1/seen", status, started, request_id, trace.trace_id)
