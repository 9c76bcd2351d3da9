"""The archive service's ``/runs`` routes (``db:admin``); the gateway forwards
``/database/archive/runs...`` here.

``POST /runs`` starts a run (:class:`~multidb_archive.mover.RunRequest`, an empty body is
policy archiving) and answers 202 at once with its report (state ``running``) and
``Location: /runs/{id}``; ``GET /runs/{id}`` follows it; ``GET /runs`` lists the latest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, cast

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.params import Parameter

from multidb import auth
from multidb.errors import BadRequestError, NotFoundError
from multidb.openapi import PROBLEM, Problem, protected, with_options
from multidb_archive import runs
from multidb_archive.mover import RunReport, RunRequest

LATEST = 20
# Run ids are short; anything else names no run (404) without a query.
RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

RunIdParameter = Annotated[str, Parameter(description="the run's id, from POST /runs")]

ANSWERS = {
    400: ResponseSpec(
        data_container=Problem,
        media_type=PROBLEM,
        description="a malformed request (unknown field, wrong type), or one the mover "
        "refuses (unknown model, ids of a model that is not archivable)",
    ),
    409: ResponseSpec(
        data_container=Problem,
        media_type=PROBLEM,
        description="another archive run holds the mover (on any replica, or the CLI)",
    ),
    503: ResponseSpec(
        data_container=Problem,
        media_type=PROBLEM,
        description="the archive database is unavailable, or the default database is not "
        "configured for the archive service",
    ),
}


class RunList(msgspec.Struct, kw_only=True):
    runs: list[RunReport]


_decode_request = msgspec.json.Decoder(RunRequest).decode


def decode_run_request(body: bytes) -> RunRequest:
    """The body as a :class:`RunRequest` (empty: policy archiving); a 400 naming the field."""
    if not body.strip():
        return RunRequest()
    try:
        return _decode_request(body)
    except msgspec.ValidationError as exc:
        raise BadRequestError(f"invalid run request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequestError(f"the run request is not JSON: {exc}") from None


def _request_schema() -> Schema:
    # msgspec's own JSON schema of the request: the one the decoder enforces.
    _, components = msgspec.json.schema_components([RunRequest])
    return cast(Schema, components[RunRequest.__name__])


@dataclass
class RunRequestBody(Operation):
    """The operation of ``POST /runs``, whose handler reads the body itself (to name an
    unknown field in its 400): documents the body it accepts."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=False,
            content={"application/json": OpenAPIMediaType(schema=_request_schema())},
        )


@post(
    "/runs",
    status_code=202,
    tags=["archive"],
    operation_class=RunRequestBody,
    **protected(auth.ADMIN, answers=ANSWERS),
)
async def start_run(
    request: Request[auth.Principal, Any, Any], state: State
) -> Response[RunReport]:
    """Start an archive (or unarchive) run; its report comes back at once, state
    `running`. Follow it at the `Location` given (`/runs/{id}`).

    An empty body archives what `MULTI_DB_ARCHIVE_POLICY` says; `dry_run` moves nothing
    and reports what would move (rows, bytes, held back); `kind: "unarchive"` brings rows
    back (`ids` by model, or every archived row of `models`). 409 while another run holds
    the mover.
    """
    run_request = decode_run_request(await request.body())
    report = await runs.start_run(state.runtime, run_request, request.user.subject)
    return Response(report, status_code=202, headers={"Location": f"/runs/{report.id}"})


@get("/runs", tags=["archive"], **protected(auth.ADMIN, answers={503: ANSWERS[503]}))
async def list_runs(state: State) -> RunList:
    """The latest 20 runs, newest first."""
    mover = runs.service_mover(state.runtime)
    found: list[RunReport] = await runs.reading(state.runtime, mover.runs(LATEST))
    return RunList(runs=found)


@get(
    "/runs/{run_id:str}",
    tags=["archive"],
    **protected(
        auth.ADMIN,
        answers={
            404: ResponseSpec(
                data_container=Problem, media_type=PROBLEM, description="no run has this id"
            ),
            503: ANSWERS[503],
        },
    ),
)
async def show_run(run_id: RunIdParameter, state: State) -> RunReport:
    """One run's report: its state, and per model the rows and bytes moved, the rows held
    back (by reason) and those left in place because they changed mid-batch."""
    report: RunReport | None = None
    if RUN_ID.match(run_id):
        mover = runs.service_mover(state.runtime)
        report = await runs.reading(state.runtime, mover.get_run(run_id))
    if report is None:
        raise NotFoundError(f"no archive run {run_id[:64]!r}")
    return report


# GET and POST /runs: one OPTIONS answer naming both (see with_options).
ROUTES = with_options([start_run, list_runs, show_run])
