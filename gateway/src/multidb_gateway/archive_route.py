"""``/database/archive/runs...``: the archive mover's runs, through the archive service.

(Served as ``/database/{name}/runs...``: any other configured role is a 404.)

The gateway checks the caller's ``db:admin`` on the archive database (``db:admin`` or
``db:admin:archive``), then asks the archive service (``/runs...``,
``multidb_archive.runs_route``) with the caller's own credentials, so the service checks
the caller too. The request body of ``POST`` goes as it came (bounded by
``MULTI_DB_REQUEST_MAX_BYTES``): the service decodes it and names a bad field in its 400.

The service's answer is passed on, status and body, when it is one the route expects: its
200 or 202, decoded first (and about the run asked for), and its 400, 404 and 409, decoded
first as problems. Anything else is the gateway's own problem, as for every forwarded call
(:mod:`multidb_gateway.forwarding`): an archive service that cannot be reached is a 503
(504 when it did not answer in time), its own 503 and 504 keep their meaning, and an answer
that does not decode, or a status the route does not expect, is a 502.

The gateway imports no role: the structs below are the archive service's wire types
(``multidb_archive.mover.wire``) as the gateway reads and documents them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar, cast

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.params import FromPath, Parameter

from multidb import auth
from multidb.errors import BadGatewayError, NotFoundError
from multidb.openapi import PROBLEM, Problem, protected
from multidb_gateway import forwarding
from multidb_gateway.metrics import BAD_ANSWER
from multidb_gateway.runtime import GatewayRuntime, forward_headers
from multidb_gateway.services import MAX_ANSWER_BYTES, ServiceUnreachableError

ROLE = "archive"
JSON = "application/json"
WHAT = "the archive runs API"
RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A path parameter, not a fixed "archive" segment: a fixed one would shadow
# /database/{name}/... (stats, health) for the archive role in Litestar's router.
NAMED = auth.PATH_PREFIX + "name"


class RunRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What to run: an empty body archives what `MULTI_DB_ARCHIVE_POLICY` says.

    `models`: only these (default: every model with a policy, for archive; every model,
    for unarchive); `ids`: only these rows, by model (`{"Media": [1, 2]}`), whatever the
    policy says; `dry_run`: move nothing, report what would move."""

    kind: Literal["archive", "unarchive"] = "archive"
    dry_run: bool = False
    models: list[str] | None = None
    ids: dict[str, list[int]] | None = None


class ModelReport(msgspec.Struct, kw_only=True):
    """`rows`/`bytes`: moved (in a dry run, that would move); `held_back`: rows the
    policy chose that stay, by reason; `changed`: rows left in place because they changed
    while their batch moved."""

    rows: int = 0
    bytes: int = 0
    batches: int = 0
    held_back: dict[str, int] = msgspec.field(default_factory=dict)
    changed: int = 0


class RunReport(msgspec.Struct, kw_only=True):
    id: str
    kind: Literal["archive", "unarchive"]
    dry_run: bool
    trigger: Literal["schedule", "http", "cli"]
    state: Literal["running", "done", "failed", "stopped"]
    started_at: datetime
    finished_at: datetime | None = None
    message: str | None = None
    requested_by: str | None = None
    models: dict[str, ModelReport] = msgspec.field(default_factory=dict)


class RunList(msgspec.Struct, kw_only=True):
    runs: list[RunReport]


RunIdParameter = Annotated[str, Parameter(description="the run's id, from POST .../runs")]
T = TypeVar("T", RunReport, RunList)


@dataclass
class RunRequestBody(Operation):
    """The operation of ``POST /database/archive/runs``, whose body goes to the service as
    it came (the service names a bad field): documents the body it accepts."""

    def __post_init__(self) -> None:
        _, components = msgspec.json.schema_components([RunRequest])
        schema = cast(Schema, components[RunRequest.__name__])
        self.request_body = RequestBody(
            required=False, content={"application/json": OpenAPIMediaType(schema=schema)}
        )


def _problem(status: int, why: str) -> ResponseSpec:
    return ResponseSpec(data_container=Problem, media_type=PROBLEM, description=why)


UNAVAILABLE = {
    502: _problem(502, "the archive service answered something unusable"),
    503: _problem(
        503,
        "the archive service or its database is unavailable, or the default database is "
        "not configured for it",
    ),
    504: _problem(504, "the archive service did not answer in time"),
}


def _unreadable(runtime: GatewayRuntime, route: str, why: str) -> BadGatewayError:
    runtime.client.metrics.error(ROLE, route, BAD_ANSWER)
    return BadGatewayError(f"the archive service answered an unreadable runs answer ({why})")


async def _forward(
    request: Request[Any, Any, Any],
    state: State,
    name: str,
    *,
    method: str,
    route: str,
    expected: tuple[int, type[T]],
    path: str | None = None,
    body: bytes | None = None,
) -> tuple[Response[bytes], T | None]:
    """Ask the archive service ``method route`` (at ``path`` when it holds an id): the
    answer to pass on and, when it is the ``expected`` status, its decoded body."""
    runtime: GatewayRuntime = state.gateway
    if name not in runtime.roles:
        raise NotFoundError(runtime.unknown(name))
    if name != ROLE:
        raise NotFoundError(f"runs are the archive role's; {name!r} has none")
    headers = forward_headers(request)
    if body is not None:
        headers["content-type"] = JSON
    try:
        answer = await runtime.client.call(
            ROLE,
            method,
            path or route,
            headers,
            runtime.settings.service_timeout_ms,
            body=body,
            max_bytes=MAX_ANSWER_BYTES,
            route=route if path is not None else None,
        )
    except ServiceUnreachableError as exc:
        raise forwarding.unreachable(ROLE, WHAT, exc) from None
    return forwarding.passed_on(
        runtime, role=ROLE, route=route, what=WHAT, answer=answer, expected=expected
    )


@post(
    "/database/{name:str}/runs",
    status_code=202,
    tags=["archive"],
    operation_class=RunRequestBody,
    **protected(
        auth.ADMIN,
        answers={
            400: _problem(
                400,
                "a malformed request (unknown field, wrong type), or one the mover refuses "
                "(unknown model, ids of a model that is not archivable)",
            ),
            404: _problem(404, "no such database role is configured, or it is not archive"),
            409: _problem(409, "another archive run holds the mover (a replica, or the CLI)"),
            **UNAVAILABLE,
        },
        database=NAMED,
    ),
)
async def start_run(
    name: FromPath[str], request: Request[Any, Any, Any], state: State
) -> Response[RunReport]:
    """Start an archive (or unarchive) run; its report comes back at once, state
    `running`, with `Location: /database/archive/runs/{id}` to follow it.

    409 while another run holds the mover (the schedule, another caller, the CLI).
    """
    body = await request.body()
    answer, report = await _forward(
        request, state, name, method="POST", route="/runs", expected=(202, RunReport), body=body
    )
    if report is not None:
        if not RUN_ID.match(report.id):
            raise _unreadable(state.gateway, "/runs", f"a run id {report.id[:70]!r}")
        answer.headers["Location"] = f"/database/archive/runs/{report.id}"
    return answer  # type: ignore[return-value]


@get(
    "/database/{name:str}/runs",
    tags=["archive"],
    **protected(
        auth.ADMIN,
        answers={
            404: _problem(404, "no such database role is configured, or it is not archive"),
            **UNAVAILABLE,
        },
        database=NAMED,
    ),
)
async def list_runs(
    name: FromPath[str], request: Request[Any, Any, Any], state: State
) -> Response[RunList]:
    """The latest 20 archive runs, newest first (`name` is `archive`)."""
    answer, _ = await _forward(
        request, state, name, method="GET", route="/runs", expected=(200, RunList)
    )
    return answer  # type: ignore[return-value]


@get(
    "/database/{name:str}/runs/{run_id:str}",
    tags=["archive"],
    **protected(
        auth.ADMIN,
        answers={
            404: _problem(404, "no run has this id, or the role is not archive"),
            **UNAVAILABLE,
        },
        database=NAMED,
    ),
)
async def show_run(
    name: FromPath[str], run_id: RunIdParameter, request: Request[Any, Any, Any], state: State
) -> Response[RunReport]:
    """One run's report: its state, and per model the rows and bytes moved, the rows held
    back (by reason) and those left in place because they changed mid-batch."""
    if name == ROLE and not RUN_ID.match(run_id):
        raise NotFoundError(f"no archive run {run_id[:64]!r}")
    answer, report = await _forward(
        request,
        state,
        name,
        method="GET",
        route="/runs/{id}",
        path=f"/runs/{run_id}",
        expected=(200, RunReport),
    )
    if report is not None and report.id != run_id:
        msg = f"the archive service answered about run {report.id!r}, not {run_id!r}"
        raise BadGatewayError(msg)
    return answer  # type: ignore[return-value]


ROUTES = [start_run, list_runs, show_run]
