# syntax=docker/dockerfile:1
#
# One image for every multidb process: any role's service, its migration step, or the
# gateway. docker-compose.yml chooses the process with `command:`; alone, the image runs
# the gateway.
#
#   docker build -t multidb:local .
#   docker run --rm multidb:local python -m multidb.service analytics --host 0.0.0.0
#   docker run --rm multidb:local multidb migrate analytics
#
# Checked structurally by tests/unit/test_deployment.py (no Docker engine on the dev machines).

FROM python:3.11-slim AS builder

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/

# The base image's interpreter, never a downloaded one: the runtime stage has the same one
# at the same path, so the virtualenv's links stay valid there.
ENV UV_PYTHON_DOWNLOADS=0 \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /app

# 1. Third-party dependencies only, exactly as locked. uv needs every workspace member's
#    pyproject.toml to check the lock; this layer is rebuilt only when one of them or
#    uv.lock changes, not when the source does. A new workspace member adds a line here.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY gateway/pyproject.toml gateway/
COPY services/default/pyproject.toml services/default/
COPY services/analytics/pyproject.toml services/analytics/
COPY services/logging/pyproject.toml services/logging/
COPY services/archive/pyproject.toml services/archive/
COPY devstack/pyproject.toml devstack/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-workspace

# 2. The workspace packages (the shared library, every role with its migrations, the gateway).
COPY shared/src shared/src
COPY gateway/src gateway/src
COPY services/default/src services/default/src
COPY services/analytics/src services/analytics/src
COPY services/logging/src services/logging/src
COPY services/archive/src services/archive/src
COPY devstack/src devstack/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev \
 && python -m compileall -q shared/src gateway/src services


FROM python:3.11-slim AS runtime

RUN groupadd --system --gid 10001 multidb \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin multidb

WORKDIR /app

# The workspace members are installed editable, so the sources stay at the same paths.
# Everything is owned by root: the app user can read it, not change it.
COPY --from=builder /app/.venv /app/.venv
COPY --from=builder /app/shared /app/shared
COPY --from=builder /app/gateway /app/gateway
COPY --from=builder /app/services /app/services
COPY --from=builder /app/devstack /app/devstack

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001

# 8000 the gateway; 8001-8004 the default, analytics, logging and archive services.
EXPOSE 8000-8004

CMD ["multidb-gateway", "--host", "0.0.0.0"]
