"""Forwarding ``POST /database/{name}/execute`` and writing its one audit record.

The gateway authenticates and checks the body itself (so a refused or malformed request
never reaches a service, and is still audited), then forwards the caller's credentials
and the original bytes. The service's status and problem details come back unchanged.
Never retried: a statement may have run even when its answer was lost.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from multidb import auth
from multidb.audit_records import AccessRecord, fingerprint, preview
from multidb.errors import (
    BadRequestError,
    DatabaseUnavailableError,
    ForbiddenError,
    NotFoundError,
    TimeoutExceededError,
)
from multidb.request_id import request_id_of
from multidb.wire import ExecuteRequest
from multidb_gateway.runtime import GatewayRuntime, forward_headers
from multidb_gateway.services import ServiceUnreachableError

_decode_request = msgspec.json.Decoder(ExecuteRequest).decode


class _Counted(msgspec.Struct):
    row_count: int | None = None


_decode_count = msgspec.json.Decoder(_Counted).decode


def _outcome(status: int, forwarded: bool) -> str:
    if status < 400:
        return "allowed"
    if status == 403:
        return "refused"
    if status == 401 or not forwarded:
        return "rejected"
    return "failed"


async def forward_execute(
    runtime: GatewayRuntime, name: str, request: Request[Any, Any, Any]
) -> Response[bytes]:
    started = time.perf_counter()
    principal: auth.Principal | None = None
    query: ExecuteRequest | None = None
    status, forwarded, row_count, error = 500, False, None, None
    try:
        principal = runtime.authenticator.authenticate(
            request.headers.get("authorization"), request.headers.get(auth.API_KEY_HEADER)
        )
        if auth.EXECUTE not in principal.scopes:
            raise ForbiddenError(f"this needs the '{auth.EXECUTE}' scope")
        if name not in runtime.roles:
            raise NotFoundError(runtime.unknown(name))
        body = await request.body()
        try:
            query = _decode_request(body)
        except msgspec.DecodeError as exc:
            raise BadRequestError(f"invalid execute body: {exc}") from None
        auth.check_write(principal, query.read_only)
        timeout_ms = runtime.settings.core.execute_timeout_ms + runtime.settings.service_timeout_ms
        forwarded = True
        try:
            answer = await runtime.client.call(
                name,
                "POST",
                "/execute",
                {**forward_headers(request), "content-type": "application/json"},
                timeout_ms,
                body=body,
            )
        except ServiceUnreachableError as exc:
            kind = TimeoutExceededError if exc.timed_out else DatabaseUnavailableError
            raise kind(f"the {name} service {exc.reason}") from None
        status = answer.status
        if status == 200:
            row_count = _decode_count(answer.body).row_count
        else:
            error = answer.body[:500].decode(errors="replace")
        return Response(answer.body, status_code=status, media_type=answer.content_type)
    except HTTPException as exc:
        status, error = exc.status_code, exc.detail
        raise
    except Exception as exc:
        status = getattr(exc, "status_code", 500)
        error = getattr(exc, "detail", type(exc).__name__)
        raise
    finally:
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
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                error=error,
                client_ip=request.client.host if request.client else None,
            )
        )
