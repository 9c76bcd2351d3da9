"""The role service's routes: thin handlers over the runtime and plain functions."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody

from multidb import auth
from multidb.backups import routes as backup_routes
from multidb.disconnect import cancel_on_disconnect
from multidb.errors import ForbiddenError
from multidb.logs import execute_line
from multidb.metrics import metrics_endpoint
from multidb.openapi import protected, with_options
from multidb.replicas.routing import (
    CONSISTENCY_HEADER,
    MIN_LSN_HEADER,
    ConsistencyHeader,
    MinLsnHeader,
    from_headers,
)
from multidb.service.metrics import OK, execute_outcome
from multidb.service.runtime import RoleRuntime
from multidb.wire import (
    DEGRADED,
    HEALTHY,
    BackupInfo,
    ExecuteRequest,
    ExecuteResult,
    HealthReport,
    ModelsReport,
    Readiness,
    StatsReport,
)

NO_AUTH = {"exclude_from_auth": True}
log = logging.getLogger("multidb.service.execute")


def _runtime(state: State) -> RoleRuntime:
    runtime: RoleRuntime = state.runtime
    return runtime


@get("/livez", opt=NO_AUTH, tags=["probes"])
async def livez() -> dict[str, str]:
    """The process answers: checks no dependency, so a slow database never restarts it."""
    return {"status": "alive"}


@get(
    "/readyz",
    opt=NO_AUTH,
    tags=["probes"],
    responses={503: ResponseSpec(Readiness, description="not ready (same body, with error)")},
)
async def readyz(state: State) -> Response[Readiness]:
    """Ready when the database answers and its migrations are at head; ``jobs`` shows
    each background job's runs and failures (a failing job does not make it unready)."""
    runtime = _runtime(state)
    revision, error = await runtime.revision()
    head = state.head_revision
    ready = error is None and revision == head
    if error is None and not ready:
        error = f"migrations not at head (database at {revision or 'none'}, head is {head})"
    body = Readiness(
        status="ready" if ready else "not ready",
        database=runtime.spec.name,
        revision=revision,
        head=head,
        error=error,
        jobs=[msgspec.to_builtins(job) for job in runtime.jobs.status()] or None,
    )
    return Response(body, status_code=200 if ready else 503)


@get(
    "/health",
    tags=["database"],
    response_description=(
        "healthy, or degraded: the primary answers but a replica is down or lagging "
        "(reason says which; nodes lists every server with its role, state, lag_bytes, "
        "lag_s and serving_reads)"
    ),
    **protected(
        auth.READ,
        answers={503: ResponseSpec(HealthReport, description="unhealthy: no primary answers")},
    ),
)
async def health(state: State) -> Response[HealthReport]:
    """The spec's health answer; 200 when healthy or ``degraded`` (a replica down or
    lagging: ``reason`` says which), 503 (same body, with ``error``) when no primary answers.
    A role with replicas lists its servers in ``nodes``."""
    report = await _runtime(state).health()
    return Response(report, status_code=200 if report.status in {HEALTHY, DEGRADED} else 503)


@get(
    "/stats",
    tags=["database"],
    **protected(
        auth.READ,
        answers={503: ResponseSpec(StatsReport, description="the database is unavailable")},
    ),
)
async def stats(state: State) -> Response[StatsReport]:
    """The spec's statistics; 503 with ``status: unavailable`` when the database is down."""
    report = await _runtime(state).stats()
    return Response(report, status_code=200 if report.error is None else 503)


@get("/models", tags=["database"], **protected(auth.READ))
async def models(state: State) -> ModelsReport:
    role = _runtime(state).spec.name
    return ModelsReport(database=role, models=state.router.get_models_for_database(role))


@get("/backup/info", tags=["database"], **protected(auth.ADMIN))
async def backup_info(state: State) -> BackupInfo:
    """Where the data lives and its TLS mode; the url is redacted, the password never shown,
    certificates and keys by path at most."""
    runtime = _runtime(state)
    info = runtime.database.backup_info()
    info.backups = runtime.backups.state()
    return info


async def _execute_query(
    data: ExecuteRequest, request: Request[auth.Principal, Any, Any], state: State
) -> ExecuteResult:
    data = from_headers(
        data,
        request.headers.get(CONSISTENCY_HEADER),
        request.headers.get(MIN_LSN_HEADER),
    )
    runtime = _runtime(state)
    principal = request.user
    with execute_line(log, principal=principal.subject, read_only=data.read_only) as line:
        auth.check_write(principal, data.read_only, runtime.spec.name)
        votes = runtime.plugins.hook.multidb_execute_vote(
            role=runtime.spec.name,
            query=data.query,
            params=data.params,
            read_only=data.read_only,
            principal=principal,
        )
        refusals = [
            vote.reason or "refused by a plugin" for vote in votes if vote and not vote.allow
        ]
        if refusals:
            raise ForbiddenError("; ".join(refusals))

        async def run() -> ExecuteResult:
            return await runtime.router.execute(data)

        with runtime.callers.slot(principal.subject):
            result = await cancel_on_disconnect(request.receive, run())
        line["rows"] = result.row_count
        return result


@post(
    "/execute",
    status_code=200,
    tags=["database"],
    **protected(auth.EXECUTE, 400, 413, 429, 503, 504),
)
async def execute_query(
    data: JSONBody[ExecuteRequest],
    request: Request[auth.Principal, Any, Any],
    state: State,
    consistency: ConsistencyHeader = None,
    min_lsn: MinLsnHeader = None,
) -> ExecuteResult:
    """Run one statement, read-only unless the caller holds ``db:write`` and asks to write.

    Writes run on the primary and answer ``lsn``; reads run on a replica within the lag
    bound when the role has one (``server`` says where, ``routing`` why)."""
    measured = _runtime(state).metrics
    stop = measured.execute_duration.time()
    try:
        with stop:
            result = await _execute_query(data, request, state)
    except Exception as exc:
        measured.execute_outcomes[execute_outcome(exc)].inc()
        raise
    measured.execute_outcomes[OK].inc()
    measured.execute_rows.inc(result.row_count)
    measured.execute_bytes.inc(len(result.result))
    return result


ROUTES = with_options(
    [
        livez,
        readyz,
        health,
        stats,
        models,
        backup_info,
        execute_query,
        metrics_endpoint,
        *backup_routes.ROUTES,
    ]
)
