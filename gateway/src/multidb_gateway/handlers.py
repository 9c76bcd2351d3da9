"""The public API: the spec's ``/database/...`` paths and shapes, plus probes."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath
from litestar.types import ControllerRouterHandler

from multidb import auth
from multidb.errors import NotFoundError
from multidb.metrics import metrics_endpoint
from multidb.openapi import RawExecuteBody, protected, with_options
from multidb.replicas.routing import ConsistencyHeader, MinLsnHeader
from multidb.wire import BackupInfo, ExecuteResult, HealthReport, ModelsReport, StatsReport
from multidb_gateway import (
    archive_route,
    audit_recent,
    backups_route,
    dashboard,
    history_route,
    ingest_route,
    queries_route,
)
from multidb_gateway.execute_proxy import forward_execute
from multidb_gateway.fleet import RoleAnswer
from multidb_gateway.runtime import GatewayRuntime, forward_headers

NO_AUTH = {"exclude_from_auth": True}
JSON = "application/json"
_encode = msgspec.json.Encoder().encode
# Where the per-database routes find the database their scope is for.
NAMED = auth.PATH_PREFIX + "name"
SEEN = auth.ANY_DATABASE


def filtered(summary: str, scope: str = auth.READ, verb: str = "read") -> str:
    """The OpenAPI ``description`` of an aggregate: what it is, and that it filters."""
    rule = (
        f"Filtered, not refused: only the databases the caller may {verb} "
        f"(`{scope}` for every database, or `{scope}:<role>` for each role) are included; "
        f"a caller who may {verb} none of the configured databases gets 403."
    )
    return f"{summary}\n\n{rule}"


class Configured(msgspec.Struct):
    databases: list[str]


def _runtime(state: State) -> GatewayRuntime:
    runtime: GatewayRuntime = state.gateway
    return runtime


def _role(runtime: GatewayRuntime, name: str) -> str:
    if name not in runtime.roles:
        raise NotFoundError(runtime.unknown(name))
    return name


def _aggregate(answers: dict[str, RoleAnswer], strict: bool) -> Response[bytes]:
    body = _encode({role: answer.body for role, answer in answers.items()})
    healthy = all(answer.ok for answer in answers.values())
    return Response(body, status_code=200 if healthy or not strict else 503, media_type=JSON)


def _single(answer: RoleAnswer) -> Response[bytes]:
    return Response(
        bytes(answer.body), status_code=200 if answer.ok else answer.status, media_type=JSON
    )


def _same_body(model: Any, *statuses: int) -> dict[int, ResponseSpec]:
    """A role's own report, answered with a status that says it is not well."""
    why = {
        502: "the role's service answered something unusable (the report says what)",
        503: "unhealthy or unavailable (same body, with error)",
        504: "the role's service did not answer in time (the report says so)",
    }
    return {status: ResponseSpec(model, description=why[status]) for status in statuses}


@get("/livez", opt=NO_AUTH, tags=["probes"])
async def livez() -> dict[str, str]:
    """The gateway process answers; checks no dependency."""
    return {"status": "alive"}


@get("/readyz", opt=NO_AUTH, tags=["probes"])
async def readyz(state: State) -> dict[str, Any]:
    """Ready to serve; the audit trail's and the stats sampler's backlog, losses and
    refusals are visible here (``audit``, ``stats_history``).

    Always 200 once started: ``status`` is ``degraded`` (with ``reasons``) while the
    logging service refuses audit delivery, or the analytics service the stats samples;
    ``ready`` otherwise. A refusal is a misconfiguration shared by every gateway
    replica, so a 503 would make a load balancer take them all out of rotation, turning
    a fixable audit problem into an outage; the records are held (``audit.pending``) and
    go through once the configuration is fixed.
    The code answers the load balancer, the body tells the operator.
    """
    runtime = _runtime(state)
    audit = runtime.audit.status()
    body: dict[str, Any] = {"status": "ready", "roles": runtime.roles}
    if audit.refusing:
        body["status"] = "degraded"
        body["reasons"] = [f"audit records are not delivered: {audit.last_error}"]
    body["audit"] = msgspec.to_builtins(audit)
    history = runtime.sampler.status()
    if history.refusing:
        body["status"] = "degraded"
        reasons = body.setdefault("reasons", [])
        reasons.append(f"stats samples are not delivered: {history.last_error}")
    body["stats_history"] = msgspec.to_builtins(history)
    return body


@get(
    "/database/health",
    tags=["database"],
    **protected(auth.READ, answers=_same_body(dict[str, HealthReport], 503), database=SEEN),
    description=filtered(
        "Every role's health, checked live and concurrently; 503 when any is unhealthy."
    ),
)
async def health_all(
    request: Request[Any, Any, Any], state: State
) -> Response[dict[str, HealthReport]]:
    """Every role's health, checked live and concurrently; 503 when any is unhealthy."""
    runtime = _runtime(state)
    roles = runtime.visible(request, auth.READ)
    answers = await runtime.fleet.ask_all("health", roles, forward_headers(request))
    return _aggregate(answers, strict=True)  # type: ignore[return-value]


@get(
    "/database/health/cached",
    tags=["database"],
    **protected(auth.READ, answers=_same_body(dict[str, HealthReport], 503), database=SEEN),
    description=filtered(
        "Every role's latest background check (refreshed about every second), with `age_s`; "
        "503 when any is unhealthy."
    ),
)
async def health_cached(
    request: Request[Any, Any, Any], state: State
) -> Response[dict[str, dict[str, Any]]]:
    """Every role's latest background check (refreshed about every second), with ``age_s``."""
    runtime = _runtime(state)
    healthy, body = runtime.monitor.snapshot(runtime.visible(request, auth.READ))
    return Response(body, status_code=200 if healthy else 503)


@get(
    "/database/stats",
    tags=["database"],
    **protected(auth.READ, database=SEEN),
    description=filtered(
        "Every role's statistics; a role whose service or database is down is `unavailable`."
    ),
)
async def stats_all(
    request: Request[Any, Any, Any], state: State
) -> Response[dict[str, StatsReport]]:
    """Every role's statistics; a role whose service or database is down is ``unavailable``."""
    runtime = _runtime(state)
    roles = runtime.visible(request, auth.READ)
    answers = await runtime.fleet.ask_all("stats", roles, forward_headers(request))
    return _aggregate(answers, strict=False)  # type: ignore[return-value]


@get(
    "/database/configured",
    tags=["database"],
    **protected(auth.READ, database=SEEN),
    description=filtered("The configured databases."),
)
async def configured(request: Request[Any, Any, Any], state: State) -> Configured:
    """The configured databases."""
    return Configured(databases=_runtime(state).visible(request, auth.READ))


@get(
    "/database/models",
    tags=["database"],
    **protected(auth.READ, database=SEEN),
    description=filtered("Each configured database's models."),
)
async def models_all(request: Request[Any, Any, Any], state: State) -> dict[str, list[str]]:
    """Each configured database's models."""
    runtime = _runtime(state)
    return {
        role: runtime.router.get_models_for_database(role)
        for role in runtime.visible(request, auth.READ)
    }


@get(
    "/database/backup/info",
    tags=["database"],
    **protected(auth.ADMIN, database=SEEN),
    description=filtered(
        "Where every database lives; urls redacted, never a password.", auth.ADMIN, "administer"
    ),
)
async def backup_all(
    request: Request[Any, Any, Any], state: State
) -> Response[dict[str, BackupInfo]]:
    """Where every database lives; urls redacted, never a password."""
    runtime = _runtime(state)
    roles = runtime.visible(request, auth.ADMIN)
    answers = await runtime.fleet.ask_all("backup", roles, forward_headers(request))
    return _aggregate(answers, strict=False)  # type: ignore[return-value]


@get(
    "/database/{name:str}/health",
    tags=["database"],
    **protected(auth.READ, 404, answers=_same_body(HealthReport, 502, 503, 504), database=NAMED),
)
async def health_one(
    name: FromPath[str], request: Request[Any, Any, Any], state: State
) -> Response[HealthReport]:
    runtime = _runtime(state)
    answer = await runtime.fleet.ask("health", _role(runtime, name), forward_headers(request))
    return _single(answer)  # type: ignore[return-value]


@get(
    "/database/{name:str}/stats",
    tags=["database"],
    **protected(auth.READ, 404, answers=_same_body(StatsReport, 502, 503, 504), database=NAMED),
)
async def stats_one(
    name: FromPath[str], request: Request[Any, Any, Any], state: State
) -> Response[StatsReport]:
    runtime = _runtime(state)
    answer = await runtime.fleet.ask("stats", _role(runtime, name), forward_headers(request))
    return _single(answer)  # type: ignore[return-value]


@get("/database/{name:str}/models", tags=["database"], **protected(auth.READ, 404, database=NAMED))
async def models_one(name: FromPath[str], state: State) -> ModelsReport:
    runtime = _runtime(state)
    return ModelsReport(
        database=name, models=runtime.router.get_models_for_database(_role(runtime, name))
    )


@post(
    "/database/{name:str}/execute",
    status_code=200,
    tags=["database"],
    operation_class=RawExecuteBody,
    # Authenticated by the handler itself, so that refused calls are audited too.
    **protected(None, 400, 404, 413, 429, 502, 503, 504),
)
async def execute(
    name: FromPath[str],
    request: Request[Any, Any, Any],
    state: State,
    consistency: ConsistencyHeader = None,
    min_lsn: MinLsnHeader = None,
) -> Response[ExecuteResult]:
    """Forward one statement to the role's service; exactly one audit record either way.

    Needs `db:execute` (or `db:execute:<name>`), and to write (`read_only: false`)
    `db:write` (or `db:write:<name>`) as well. Reads may run on a replica (`server`);
    a write answers `lsn`, which a later read carries as `min_lsn` to see it.
    """
    return await forward_execute(_runtime(state), name, request)  # type: ignore[return-value]


ROUTES: list[ControllerRouterHandler] = with_options(
    [
        livez,
        readyz,
        health_all,
        health_cached,
        stats_all,
        configured,
        models_all,
        backup_all,
        health_one,
        stats_one,
        models_one,
        execute,
        *history_route.ROUTES,
        *queries_route.ROUTES,
        *backups_route.ROUTES,
        *archive_route.ROUTES,
        *ingest_route.ROUTES,
        metrics_endpoint,
        *audit_recent.ROUTES,
        *dashboard.ROUTES,
    ]
)
