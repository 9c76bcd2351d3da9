"""``POST /database/logging/logs`` and ``POST /database/analytics/events``: batches for
the ingestion APIs of the logging and analytics services.

The gateway checks the caller's ``ingest:write`` on that role (``ingest:write`` or
``ingest:write:<role>``), that the role is configured (404 otherwise) and that the body is
at most ``MULTI_DB_INGEST_MAX_BYTES`` (413, before anything reaches the service), then
sends the body, its Content-Type and the caller's own credentials to the service, which
checks the records, the caller and its limits again, and stores the batch.

The service's answer is passed on when it is one the route expects: its 200 decoded first
into :class:`~multidb.ingest.IngestReceipt`, its 400, 413 and 415 decoded first as
problems (they name the record and the field). Anything else is the gateway's own problem,
as for every forwarded call (:mod:`multidb_gateway.forwarding`): a service that cannot be
reached is a 503 (504 when it did not answer in time), its own 503 and 504 keep their
meaning, an answer that does not decode or a status the route does not expect is a 502.
Never retried here: the caller retries, and its ``event_id`` makes that safe.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State

from multidb import auth
from multidb.disconnect import cancel_on_disconnect
from multidb.errors import BadGatewayError, NotFoundError
from multidb.ingest import IngestLimits, IngestReceipt, LogRecord, read_body
from multidb.ingest.body import JSON
from multidb.ingest.docs import batch_operation
from multidb.ingest.records import AnalyticsRecord
from multidb.ingest.staging import WRITE_TIMEOUT_S
from multidb.openapi import PROBLEM, Problem, protected
from multidb_gateway import forwarding
from multidb_gateway.metrics import BAD_ANSWER, BAD_STATUS, REFUSED_CREDENTIALS
from multidb_gateway.runtime import GatewayRuntime, forward_headers
from multidb_gateway.services import ServiceUnreachableError

# The service's answers passed on with their problem body, as they came.
PASSED_ON = frozenset({400, 413, 415})
ERRORS = (400, 404, 413, 415, 502, 503, 504)

_decode_receipt = msgspec.json.Decoder(IngestReceipt).decode
_decode_problem = msgspec.json.Decoder(Problem).decode


def _unreadable(runtime: GatewayRuntime, role: str, route: str, why: str) -> BadGatewayError:
    runtime.client.metrics.error(role, route, BAD_ANSWER)
    return BadGatewayError(f"the {role} service answered an unreadable ingestion answer ({why})")


async def forward_batch(
    request: Request[Any, Any, Any], state: State, role: str, route: str
) -> Response[bytes]:
    """Send the caller's batch to ``role``'s service ``POST route``; its answer, checked."""
    runtime: GatewayRuntime = state.gateway
    what = f"the ingestion API of {role!r}"
    if role not in runtime.roles:
        raise NotFoundError(f"{what} needs the {role} role: {runtime.unknown(role)}")
    body = await read_body(request, IngestLimits.from_settings(runtime.settings.core))
    headers = {
        **forward_headers(request),
        "content-type": request.headers.get("content-type") or JSON,
    }
    # Longer than the service may take, so that its own 504 comes back rather than ours.
    timeout_ms = int(WRITE_TIMEOUT_S * 1000) + runtime.settings.service_timeout_ms
    call = runtime.client.call(role, "POST", route, headers, timeout_ms, body=body)
    try:
        answer = await cancel_on_disconnect(request.receive, call)
    except ServiceUnreachableError as exc:
        raise forwarding.unreachable(role, what, exc) from None
    if answer.status == 200:
        try:
            _decode_receipt(answer.body)
        except msgspec.DecodeError as exc:
            raise _unreadable(runtime, role, route, f"200: {exc}") from None
        return Response(answer.body, status_code=200, media_type=JSON)
    if answer.status in PASSED_ON:
        try:
            problem = _decode_problem(answer.body)
        except msgspec.DecodeError as exc:
            raise _unreadable(runtime, role, route, f"{answer.status}: {exc}") from None
        if problem.status != answer.status:
            why = f"a {problem.status} problem answered as {answer.status}"
            raise _unreadable(runtime, role, route, why)
        return Response(answer.body, status_code=answer.status, media_type=PROBLEM)
    kind = REFUSED_CREDENTIALS if answer.status in {401, 403} else BAD_STATUS
    if answer.status not in {503, 504}:
        runtime.client.metrics.error(role, route, kind)
    failure = forwarding.failure(role, what, answer.status, answer.body)
    if answer.retry_after:
        failure.headers = {"Retry-After": answer.retry_after}
    raise failure


@post(
    "/database/logging/logs",
    status_code=200,
    tags=["ingestion"],
    operation_class=batch_operation(LogRecord),
    # The batch limit is MULTI_DB_INGEST_MAX_BYTES, enforced while reading (read_body).
    request_max_body_size=None,
    **protected(auth.INGEST, *ERRORS, database=auth.ROLE_PREFIX + "logging"),
)
async def ingest_logs(request: Request[Any, Any, Any], state: State) -> Response[IngestReceipt]:
    """Store a batch of log records in the logging database: a JSON array
    (`application/json`) or one record per line (`application/x-ndjson`).

    All or nothing: a bad record is a 400 naming its `index` and `field`, and nothing is
    stored. A record whose `event_id` and `timestamp` were stored before is skipped
    (`inserted` counts the new ones), so a batch may be sent again. A record with `error`
    is also stored as an error. At most MULTI_DB_INGEST_MAX_RECORDS records and
    MULTI_DB_INGEST_MAX_BYTES bytes (413). Needs `ingest:write` (or `ingest:write:logging`).
    """
    return await forward_batch(request, state, "logging", "/logs")  # type: ignore[return-value]


@post(
    "/database/analytics/events",
    status_code=200,
    tags=["ingestion"],
    operation_class=batch_operation(AnalyticsRecord),
    request_max_body_size=None,
    **protected(auth.INGEST, *ERRORS, database=auth.ROLE_PREFIX + "analytics"),
)
async def ingest_events(request: Request[Any, Any, Any], state: State) -> Response[IngestReceipt]:
    """Store a batch of events (`"type": "event"`) and user activities
    (`"type": "activity"`) in the analytics database: a JSON array (`application/json`) or
    one record per line (`application/x-ndjson`).

    All or nothing, as for logs; new events add to the hourly rollups, each counted once
    however often its batch is sent. Needs `ingest:write` (or `ingest:write:analytics`).
    """
    return await forward_batch(request, state, "analytics", "/events")  # type: ignore[return-value]


ROUTES = [ingest_logs, ingest_events]
