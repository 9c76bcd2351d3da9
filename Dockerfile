# syntax=docker/dockerfile:1
#
# One image per role and one for the gateway, each holding only what it runs: its own
# workspace package, the shared library and their locked third-party dependencies,
# installed (not editable) into /app/.venv. No image holds the development stack
# (multidb-devstack, pgserver) or the dev tools; no role image holds another role.
#
#   docker build --target analytics -t multidb-analytics:local .
#   docker run --rm multidb-analytics:local                              # its service
#   docker run --rm multidb-analytics:local multidb migrate analytics    # its migration step
#   docker build --target gateway -t multidb-gateway:local .             # (the default target)
#
# The gateway image holds the role packages too: the gateway discovers the roles (names,
# ports, models for routing) through their `multidb.roles` entry points. A role package
# depends on nothing but the shared library, so that adds only their own code; the gateway
# never connects to a database and gets no database password.
#
# The role images also hold pg_dump/pg_restore 16 for their backups (stage role-runtime);
# the gateway's does not.
#
# A new role gets a build stage and a target like the four below (the deployment test
# fails until it has them). What each image holds, and its size: docs/images.md, made by
# bench/image_contents.py. Checked structurally by tests/unit/test_deployment.py (no
# Docker engine on the dev machines).

# ---- the builder: uv, the lock, every workspace member's pyproject.toml ----------------

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

# uv checks the lock against every member's pyproject.toml, so all of them are here (a new
# workspace member adds a line); a target copies the sources of what it installs only.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY gateway/pyproject.toml gateway/
COPY services/default/pyproject.toml services/default/
COPY services/analytics/pyproject.toml services/analytics/
COPY services/logging/pyproject.toml services/logging/
COPY services/archive/pyproject.toml services/archive/
COPY devstack/pyproject.toml devstack/


# ---- the runtime base: the same interpreter, an unprivileged user ----------------------

FROM python:3.11-slim AS runtime

RUN groupadd --system --gid 10001 multidb \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin multidb

WORKDIR /app

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# What a target copies in stays owned by root: the app user can read it, not change it.
USER 10001:10001


# ---- the role runtime: the runtime plus pg_dump/pg_restore 16 ---------------------------
# Every role service takes, verifies and drills its own database's backups with pg_dump and
# pg_restore (multidb.backups), which must be of a major version at least the server's:
# 16, the major of the compose file's servers (postgres:16). Debian's own client is
# whatever major its release carries (15 in bookworm), so the client comes from the
# PostgreSQL project's apt repository (PGDG), set up the documented way (the script in
# postgresql-common), at the servers' major. The gateway never runs them: its image stays
# on the plain runtime.
#
# MULTI_DB_PG_BIN_DIR names the versioned folder, so the tools are that one installation's
# pair and a missing or moved client is one error naming the folder: without it the search
# would find them too, but PATH's pg_dump is Debian's pg_wrapper (a Perl script choosing a
# version by its own rules). A server major change moves the 16s here and in
# docker-compose.yml together (tests/unit/test_deployment.py checks they agree).
#
# MULTI_DB_BACKUP_DIR is the image's backups folder (the default, .data/backups under /app,
# is not the app user's to write). The folder is owned by the app user: a named volume
# mounted there (compose) takes the ownership and mode of the image's folder when first used.

FROM runtime AS role-runtime

USER root

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-common \
 && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
 && apt-get install -y --no-install-recommends postgresql-client-16 \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/multidb/backups

ENV MULTI_DB_PG_BIN_DIR=/usr/lib/postgresql/16/bin \
    MULTI_DB_BACKUP_DIR=/var/lib/multidb/backups

USER 10001:10001


# ---- role: default ----------------------------------------------------------------------
# Each role in two layers: its third-party dependencies exactly as locked (rebuilt only
# when a pyproject.toml or uv.lock changes), then the shared library and the role itself.

FROM builder AS build-default
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-workspace --package multidb-default
COPY shared/src shared/src
COPY services/default/src services/default/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package multidb-default

FROM role-runtime AS default
COPY --from=build-default /app/.venv /app/.venv
EXPOSE 8001
CMD ["python", "-m", "multidb.service", "default", "--host", "0.0.0.0"]


# ---- role: analytics ----------------------------------------------------------------------

FROM builder AS build-analytics
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-workspace --package multidb-analytics
COPY shared/src shared/src
COPY services/analytics/src services/analytics/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package multidb-analytics

FROM role-runtime AS analytics
COPY --from=build-analytics /app/.venv /app/.venv
EXPOSE 8002
CMD ["python", "-m", "multidb.service", "analytics", "--host", "0.0.0.0"]


# ---- role: logging ------------------------------------------------------------------------

FROM builder AS build-logging
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-workspace --package multidb-logging
COPY shared/src shared/src
COPY services/logging/src services/logging/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package multidb-logging

FROM role-runtime AS logging
COPY --from=build-logging /app/.venv /app/.venv
EXPOSE 8003
CMD ["python", "-m", "multidb.service", "logging", "--host", "0.0.0.0"]


# ---- role: archive ------------------------------------------------------------------------

FROM builder AS build-archive
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-workspace --package multidb-archive
COPY shared/src shared/src
COPY services/archive/src services/archive/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package multidb-archive

FROM role-runtime AS archive
COPY --from=build-archive /app/.venv /app/.venv
EXPOSE 8004
CMD ["python", "-m", "multidb.service", "archive", "--host", "0.0.0.0"]


# ---- the gateway (last: the target of a plain `docker build .`) ----------------------------

FROM builder AS build-gateway
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-workspace --package multidb-gateway \
        --package multidb-default --package multidb-analytics --package multidb-logging \
        --package multidb-archive
COPY shared/src shared/src
COPY gateway/src gateway/src
COPY services/default/src services/default/src
COPY services/analytics/src services/analytics/src
COPY services/logging/src services/logging/src
COPY services/archive/src services/archive/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package multidb-gateway \
        --package multidb-default --package multidb-analytics --package multidb-logging \
        --package multidb-archive

FROM runtime AS gateway
COPY --from=build-gateway /app/.venv /app/.venv
EXPOSE 8000
CMD ["multidb-gateway", "--host", "0.0.0.0"]
