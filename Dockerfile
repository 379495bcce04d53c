# The production image of mark-notify: the API (the default command), the dispatcher
# (`python -m dispatcher.main`) and the migrations (`python -m service.migrate upgrade`).
# It has no embedded PostgreSQL (the `embedded` extra, pgserver): DATABASE_URL names the
# server. docker-compose.yml builds it; docs/deployment.md says how to run it.
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The dependencies first, in a layer of their own that only a change of pyproject.toml
# rebuilds: installed with empty stand-ins for the packages, which are then uninstalled.
COPY pyproject.toml ./
RUN mkdir -p service dispatcher \
    && touch service/__init__.py dispatcher/__init__.py \
    && pip install . \
    && pip uninstall --yes mark-notify \
    && rm -rf service dispatcher build ./*.egg-info

# The code, and what it reads relative to the repository root (service/config/base.py
# ROOT): the SQL, the migrations, the templates and the documents some endpoints serve.
COPY service service
COPY dispatcher dispatcher
COPY sql sql
COPY alembic alembic
COPY config config
COPY docs docs
# Editable, so the package imported is /app's and its ROOT is /app. No extras: never
# `embedded` here.
RUN pip install --no-deps --editable . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin mark-notify

USER 10001
EXPOSE 8000 9464
# One worker by default; with more (--workers, WEB_CONCURRENCY) set PROMETHEUS_MULTIPROC_DIR
# to an empty directory of their own (docs/observability.md), as docker-compose.yml does.
# --no-proxy-headers: gateway trust is decided on the direct peer's address. --http: the
# bounded protocol refuses a request head over 32 KiB or 100 headers with a 431
# (service/http_limits.py); httptools alone reads any size into memory.
CMD ["uvicorn", "service.asgi:app", "--host", "0.0.0.0", "--port", "8000", \
     "--http", "service.http_limits:BoundedHttpToolsProtocol", \
     "--no-access-log", "--no-proxy-headers"]
