"""Forwarding ``POST /database/{name}/execute`` and writing its one audit record.

The gateway authenticates and checks the body itself (so a refused or malformed request
never reaches a service, and is still audited), then forwards the caller's credentials
and the original bytes. The service's status and problem details come back unchanged.
Never retried: a statement may have run even when its answer was lost.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
import uuid
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from multidb import auth
from multidb.audit_records import AccessRecord, fingerprint, preview
from multidb.disconnect import cancel_on_disconnect
from multidb.errors import (
    BadGatewayError,
    BadRequestError,
    DatabaseUnavailableError,
    MultiDBError,
    NotFoundError,
    TimeoutExceededError,
)
from multidb.execute import check_request
from multidb.replicas.routing import CONSISTENCY_HEADER, MIN_LSN_HEADER, from_headers
from multidb.request_id import request_id_of
from multidb.wire import ExecuteRequest
from multidb_gateway import metrics
from multidb_gateway.runtime import GatewayRuntime, forward_headers
from multidb_gateway.services import ServiceAnswer, ServiceUnreachableError

log = logging.getLogger("multidb.gateway.execute")
_decode_request = msgspec.json.Decoder(ExecuteRequest).decode


class _Counted(msgspec.Struct):
    row_count: int | None = None


class _Problem(msgspec.Struct):
    status: int
    title: str


_decode_count = msgspec.json.Decoder(_Counted).decode
_decode_problem = msgspec.json.Decoder(_Problem).decode
# Room for the answer's envelope beyond its rows and the echoed query and params.
ENVELOPE_BYTES = 64 * 1024


def routing_headers(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The caller's read routing headers (consistency, min_lsn), passed on to the service."""
    found = {}
    for header in (CONSISTENCY_HEADER, MIN_LSN_HEADER):
        value = request.headers.get(header)
        if value is not None:
            found[header] = value
    return found


def decode_request(body: bytes) -> ExecuteRequest:
    """The execute body, or 400 for anything that is not one (too deeply nested included)."""
    try:
        return _decode_request(body)
    except msgspec.DecodeError as exc:
        raise BadRequestError(f"invalid execute body: {exc}") from None
    except RecursionError:
        raise BadRequestError("invalid execute body: nested too deeply") from None


def checked_answer(name: str, answer: ServiceAnswer) -> tuple[int | None, str | None]:
    """``(row_count, error)`` of a service's answer, after making sure it is what it claims."""
    try:
        if answer.status == 200:
            return _decode_count(answer.body).row_count, None
        problem = _decode_problem(answer.body)
    except (msgspec.DecodeError, RecursionError):
        msg = f"the {name} service answered {answer.status} with an unreadable body"
        raise BadGatewayError(msg) from None
    return None, f"{problem.title} ({problem.status})"[:500]


@functools.cache
def _error_classes() -> dict[str, str]:
    """Problem title -> the domain error class a service raised for it."""
    found: dict[str, str] = {}
    pending: list[type[MultiDBError]] = [MultiDBError]
    while pending:
        kind = pending.pop()
        found.setdefault(kind.title, kind.__name__)
        pending.extend(kind.__subclasses__())
    return found


def _log_outcome(status: int, raised: str | None, error: str | None) -> str:
    """``ok``, or the class of the error: the gateway's own, or the service's (by title)."""
    if status < 400:
        return "ok"
    if raised is not None:
        return raised
    title = (error or "").rpartition(" (")[0]
    return _error_classes().get(title, title or "error")


def _outcome(status: int, forwarded: bool) -> str:
    if status < 400:
        return "allowed"
    if status == 403:
        return "refused"
    if status == 401 or not forwarded:
        return "rejected"
    return "failed"


def _deadline_ms(
    runtime: GatewayRuntime, query: ExecuteRequest, request: Request[Any, Any, Any]
) -> int:
    """How long to wait for the service: longer than it may take, so that a statement that
    times out comes back as the service's own 504 problem, not as the gateway's. A read
    may also wait for a replica to replay its min_lsn, and run again on the primary when
    its replica fails under it (multidb.replicas.routing). A malformed routing header is
    a 400 here, before the service."""
    routed = from_headers(
        query, request.headers.get(CONSISTENCY_HEADER), request.headers.get(MIN_LSN_HEADER)
    )
    longest = runtime.execute_limits.longest_ms
    timeout_ms = longest + runtime.settings.service_timeout_ms
    if routed.read_only:
        timeout_ms += longest
        if routed.min_lsn is not None:
            timeout_ms += runtime.settings.core.read_your_writes_wait_ms
    return timeout_ms


async def forward_execute(
    runtime: GatewayRuntime, name: str, request: Request[Any, Any, Any]
) -> Response[bytes]:
    started = time.perf_counter()
    principal: auth.Principal | None = None
    query: ExecuteRequest | None = None
    status, forwarded, row_count, error = 500, False, None, None
    raised: str | None = None
    try:
        principal = runtime.authenticator.authenticate(
            request.headers.get("authorization"), request.headers.get(auth.API_KEY_HEADER)
        )
        auth.require(principal, auth.EXECUTE, name)
        if name not in runtime.roles:
            raise NotFoundError(runtime.unknown(name))
        body = await request.body()
        query = decode_request(body)
        limits = runtime.execute_limits
        check_request(query, limits)
        timeout_ms = _deadline_ms(runtime, query, request)
        auth.check_write(principal, query.read_only, name)
        forwarded = True
        call = runtime.client.call(
            name,
            "POST",
            "/execute",
            {
                **forward_headers(request),
                **routing_headers(request),
                "content-type": "application/json",
            },
            timeout_ms,
            body=body,
            max_bytes=limits.max_bytes + len(body) + ENVELOPE_BYTES,
        )
        try:
            answer = await cancel_on_disconnect(request.receive, call)
        except ServiceUnreachableError as exc:
            kind = TimeoutExceededError if exc.timed_out else DatabaseUnavailableError
            raise kind(f"the {name} service {exc.reason}") from None
        status = answer.status
        if status == 401:  # the gateway accepted these credentials: the secrets differ
            runtime.client.metrics.error(name, "/execute", metrics.REFUSED_CREDENTIALS)
        try:
            row_count, error = checked_answer(name, answer)
        except BadGatewayError:
            runtime.client.metrics.error(name, "/execute", metrics.BAD_ANSWER)
            raise
        headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
        return Response(
            answer.body, status_code=status, media_type=answer.content_type, headers=headers
        )
    except HTTPException as exc:
        status, error, raised = exc.status_code, exc.detail, type(exc).__name__
        raise
    except Exception as exc:
        status = getattr(exc, "status_code", 500)
        error = getattr(exc, "detail", type(exc).__name__)
        raised = type(exc).__name__
        raise
    finally:
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        log.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "execute",
            extra={
                "target_role": name,
                "outcome": _log_outcome(status, raised, error),
                "status_code": status,
                "rows": row_count,
                "duration_ms": duration_ms,
                "principal": principal.subject if principal else None,
                "read_only": query.read_only if query else None,
            },
        )
        runtime.audit.record(
            AccessRecord(
                event_id=uuid.uuid4().hex,
                created_at=dt.datetime.now(dt.UTC),
                request_id=request_id_of(request),
                principal=principal.subject if principal else None,
                auth_method=principal.method if principal else "anonymous",
                method=request.method,
                path=request.url.path,
                target_role=name,
                query_fingerprint=fingerprint(query.query) if query else None,
                query_preview=preview(query.query) if query else None,
                read_only=query.read_only if query else True,
                outcome=_outcome(status, forwarded),
                status_code=status,
                row_count=row_count,
                duration_ms=duration_ms,
                error=error,
                client_ip=request.client.host if request.client else None,
            )
        )
