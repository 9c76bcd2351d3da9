"""``GET /database/audit/recent?limit=``: the latest execute audit records, for the dashboard.

The caller needs ``db:admin`` (checked by the authentication middleware, like every
scope). The gateway then asks the logging service's ``GET /audit/access`` with its own
credential, not the caller's: the audit trail is the gateway's record, read on behalf
of an admin it has already checked. The answer is decoded into
:class:`~multidb.audit_records.AccessRecords` (and must hold no more than ``limit``
records) before it is passed on; anything else is a 502. No logging service, or one
that cannot answer, is a 503 (504 when it did not answer in time).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import Parameter

from multidb import auth
from multidb.audit_records import AccessRecords
from multidb.errors import (
    BadGatewayError,
    DatabaseUnavailableError,
    MultiDBError,
    TimeoutExceededError,
)
from multidb.openapi import protected
from multidb.request_id import request_id_of
from multidb_gateway.runtime import GatewayRuntime, Problem
from multidb_gateway.services import ServiceUnreachableError

LOGGING = "logging"
AUDIT_PATH = "/audit/access"
DEFAULT_LIMIT = 20
MAX_LIMIT = 200
# 200 records, each with a 2 KiB path and a preview and an error at most a few KiB.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
DETAIL_LIMIT = 300
JSON = "application/json"

_decode_records = msgspec.json.Decoder(AccessRecords).decode
_decode_problem = msgspec.json.Decoder(Problem).decode


def _detail(body: bytes) -> str:
    try:
        return _decode_problem(body).detail[:DETAIL_LIMIT]
    except msgspec.DecodeError:
        return ""


def _failure(status: int, body: bytes) -> MultiDBError:
    """The logging service's refusal or failure as the gateway's own problem."""
    said = _detail(body) or str(status)
    if status in {401, 403}:
        msg = (
            f"the logging service refused the gateway's credentials ({status}); "
            "check MULTI_DB_SERVICE_SECRET/JWT_SECRET"
        )
        return BadGatewayError(msg)
    if status == 503:
        return DatabaseUnavailableError(f"the audit trail is unavailable: {said}")
    if status == 504:
        return TimeoutExceededError(f"the audit trail timed out: {said}")
    return BadGatewayError(f"the logging service answered {status}")


@get("/database/audit/recent", tags=["database"], **protected(auth.ADMIN, 400, 502, 503, 504))
async def audit_recent(
    request: Request[Any, Any, Any],
    state: State,
    limit: Annotated[
        int, Parameter(ge=1, le=MAX_LIMIT, description="how many records, newest first")
    ] = DEFAULT_LIMIT,
) -> Response[AccessRecords]:
    """The latest ``limit`` execute audit records (default 20, at most 200), newest first."""
    runtime: GatewayRuntime = state.gateway
    if LOGGING not in runtime.settings.services:
        msg = "the audit trail needs the logging role: no logging service is configured"
        raise DatabaseUnavailableError(msg)
    headers = {**runtime.credential.headers(), "x-request-id": request_id_of(request)}
    try:
        answer = await runtime.client.call(
            LOGGING,
            "GET",
            AUDIT_PATH,
            headers,
            runtime.settings.service_timeout_ms,
            max_bytes=MAX_ANSWER_BYTES,
            params={"limit": str(limit)},
        )
    except ServiceUnreachableError as exc:
        msg = f"the audit trail is unavailable: the logging service {exc.reason}"
        raise (TimeoutExceededError if exc.timed_out else DatabaseUnavailableError)(msg) from None
    if answer.status != 200:
        raise _failure(answer.status, answer.body)
    try:
        records = _decode_records(answer.body)
    except msgspec.DecodeError as exc:
        msg = f"the logging service answered unreadable audit records ({exc})"
        raise BadGatewayError(msg) from None
    if len(records.records) > limit:
        msg = f"the logging service answered {len(records.records)} records for {limit}"
        raise BadGatewayError(msg)
    return Response(answer.body, media_type=JSON)  # type: ignore[arg-type]


ROUTES = [audit_recent]
