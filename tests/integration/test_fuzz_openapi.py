"""Schemathesis over /openapi.json, against a real uvicorn on loopback and the real
database: every operation, each generated request sent as a producer service (an API key
with every scope), as a signed-in client, and with no credentials. No answer may be a 5xx,
and every answer must be documented: its status, its content type and its body's schema.

Bounded in time (FUZZ_EXAMPLES per operation, about a minute on two cores); set
MARK_NOTIFY_FUZZ_EXAMPLES for a longer hunt.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import OPENAPI_SECTIONS, create_app
from service.http_limits import BoundedHttpToolsProtocol
from service.openapi import configured_document
from tests.notify_api import new_key
from tests.support import client_token, make_config, scratch_database

FUZZ_EXAMPLES = int(os.environ.get("MARK_NOTIFY_FUZZ_EXAMPLES", "60"))


def rejects_invalid_data(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' negative_data_rejection, with 413 and 431 counted as refusals: a
    body or head over the limits is refused before it is read, so its code is about size."""
    if response.status_code in (413, 431):
        return None
    result: bool | None = negative_data_rejection(ctx, response, case)
    return result


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    rejects_invalid_data,
]


@dataclass(frozen=True)
class Target:
    base_url: str
    credentials: dict[str, dict[str, str]]


def _serve_in_thread(app: Any) -> Iterator[str]:
    """uvicorn in a thread of its own (schemathesis' tests are synchronous), with the
    protocol bin/dev runs."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        http=BoundedHttpToolsProtocol,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the API did not start")
            threading.Event().wait(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def target(pg_server_url: str, template_db: str) -> Iterator[Target]:
    with scratch_database(pg_server_url, template_db) as url:
        key = new_key(url)
        for base in _serve_in_thread(create_app(make_config(url))):
            yield Target(
                base,
                {
                    "service": {"Authorization": f"Bearer {key}"},
                    "client": {"Authorization": f"Bearer {client_token('fuzz-user')}"},
                    "none": {},
                },
            )


# The document the API serves with the test config (its enums are the config's names),
# loaded without a server so that each operation is a test of its own
# (test_openapi_is_served checks it is the one served).
DOCUMENT = configured_document(make_config("postgresql://127.0.0.1:1/unused"), *OPENAPI_SECTIONS)
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)


def _operations() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for result in SCHEMA.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # the document itself is broken: fail at collection
        found[result.ok().label] = result.ok()
    return found


OPERATIONS = _operations()
MODES = {"valid": GenerationMode.POSITIVE, "invalid": GenerationMode.NEGATIVE}


def test_openapi_is_served(target: Target) -> None:
    served = httpx.get(f"{target.base_url}/openapi.json").json()
    assert served == DOCUMENT


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("label", OPERATIONS)
def test_every_operation_answers_as_documented(label: str, mode: str, target: Target) -> None:
    strategy = OPERATIONS[label].as_strategy(generation_mode=MODES[mode])

    @given(case=strategy)
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        for who, headers in target.credentials.items():
            sent = dict(case.headers or {}) | headers
            if not headers:
                sent.pop("Authorization", None)
            try:
                case.call_and_validate(base_url=target.base_url, headers=sent, checks=CHECKS)
            except Exception as exc:
                exc.add_note(f"credentials: {who}")
                raise

    try:
        run()
    except Unsatisfiable:
        # No parameter or body of this operation has a value the schema refuses.
        pytest.skip(f"{label}: nothing to make invalid")
