"""ASGI entry point for uvicorn: `uvicorn service.asgi:app` (config from the environment)."""

from __future__ import annotations

from service.app import create_app
from service.logs import configure

# After uvicorn set up its own logging (it imports the app last): every line, uvicorn's
# included, becomes one JSON object (or text, MARK_NOTIFY_LOG_FORMAT=text).
configure("api")
app = create_app()
