"""ASGI entry point for uvicorn: `uvicorn service.asgi:app` (config from the environment)."""

from __future__ import annotations

from service.app import create_app

app = create_app()
