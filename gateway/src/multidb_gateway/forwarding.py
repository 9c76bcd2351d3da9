"""One GET to the service that owns some data, answered as the gateway's own problem.

The stats history (analytics) and the recent audit records (logging) are read the same
way: the owning service must be configured, must answer within the gateway's deadline,
and must answer 200; anything else becomes a problem that says which service and what
happened. A 400 is the caller's mistake and is passed on with the service's message; a
refused credential is a misconfiguration of the shared secrets (502); the service's own
503/504 keep their meaning. The caller decodes the returned body into its wire type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import msgspec
from litestar import Response

from multidb.errors import (
    BadGatewayError,
    BadRequestError,
    DatabaseUnavailableError,
    MultiDBError,
    TimeoutExceededError,
)
from multidb.openapi import PROBLEM
from multidb.openapi import Problem as ServiceProblem
from multidb_gateway.metrics import BAD_ANSWER, BAD_STATUS, REFUSED_CREDENTIALS
from multidb_gateway.runtime import GatewayRuntime, Problem
from multidb_gateway.services import ServiceAnswer, ServiceUnreachableError

T = TypeVar("T")
JSON = "application/json"
# A caller's mistake the owning service explains better than the gateway could.
PASSED_ON = frozenset({400, 404, 409})

DETAIL_LIMIT = 300

_decode_problem = msgspec.json.Decoder(Problem).decode
_decode_service_problem = msgspec.json.Decoder(ServiceProblem).decode


def _detail(body: bytes) -> str:
    try:
        return _decode_problem(body).detail[:DETAIL_LIMIT]
    except msgspec.DecodeError:
        return ""


def failure(role: str, what: str, status: int, body: bytes) -> MultiDBError:
    """The gateway's problem for ``role``'s answer ``status`` (not the one hoped for)."""
    said = _detail(body)
    if status == 400:
        return BadRequestError(said or f"the {role} service refused the parameters")
    if status in {401, 403}:
        msg = (
            f"the {role} service refused the credentials ({status}); "
            "check JWT_SECRET/API_KEYS/MULTI_DB_SERVICE_SECRET"
        )
        return BadGatewayError(msg)
    if status == 503:
        return DatabaseUnavailableError(f"{what} is unavailable: {said or status}")
    if status == 504:
        return TimeoutExceededError(f"{what} timed out: {said or status}")
    return BadGatewayError(f"the {role} service answered {status}")


def unreachable(role: str, what: str, exc: ServiceUnreachableError) -> MultiDBError:
    """The gateway's problem when ``role``'s service gave no answer: 504 when it did not
    answer in time, 503 otherwise."""
    msg = f"{what} is unavailable: the {role} service {exc.reason}"
    return (TimeoutExceededError if exc.timed_out else DatabaseUnavailableError)(msg)


async def fetch(
    runtime: GatewayRuntime,
    role: str,
    path: str,
    headers: Mapping[str, str],
    *,
    what: str,
    params: Mapping[str, str],
    max_bytes: int,
) -> bytes:
    """The body of ``role``'s 200 answer to ``GET path``; raise the gateway's problem
    otherwise. ``what`` names the data in messages ("stats history")."""
    if role not in runtime.settings.services:
        msg = f"{what} needs the {role} role: no {role} service is configured"
        raise DatabaseUnavailableError(msg)
    try:
        answer = await runtime.client.call(
            role,
            "GET",
            path,
            headers,
            runtime.settings.service_timeout_ms,
            max_bytes=max_bytes,
            params=params,
        )
    except ServiceUnreachableError as exc:
        raise unreachable(role, what, exc) from None
    if answer.status != 200:
        raise failure(role, what, answer.status, answer.body)
    return answer.body


def _unreadable(
    runtime: GatewayRuntime, role: str, route: str, what: str, why: str
) -> BadGatewayError:
    runtime.client.metrics.error(role, route, BAD_ANSWER)
    return BadGatewayError(f"{what} answered something unreadable ({why})")


def passed_on(
    runtime: GatewayRuntime,
    *,
    role: str,
    route: str,
    what: str,
    answer: ServiceAnswer,
    expected: tuple[int, type[T]],
) -> tuple[Response[bytes], T | None]:
    """``role``'s answer to pass on and, when it is the ``expected`` status, its decoded
    body (for the caller to check it is about what was asked); None with a passed-on
    problem (400, 404, 409, checked to be one). Anything else is the gateway's problem."""
    status, model = expected
    if answer.status == status:
        try:
            decoded: T = msgspec.json.decode(answer.body, type=model)
        except msgspec.DecodeError as exc:
            raise _unreadable(runtime, role, route, what, f"{status}: {exc}") from None
        return Response(answer.body, status_code=status, media_type=JSON), decoded
    if answer.status in PASSED_ON:
        try:
            problem = _decode_service_problem(answer.body)
        except msgspec.DecodeError as exc:
            raise _unreadable(runtime, role, route, what, f"{answer.status}: {exc}") from None
        if problem.status != answer.status:
            why = f"a {problem.status} problem answered as {answer.status}"
            raise _unreadable(runtime, role, route, what, why)
        return Response(answer.body, status_code=answer.status, media_type=PROBLEM), None
    kind = REFUSED_CREDENTIALS if answer.status in {401, 403} else BAD_STATUS
    if answer.status not in {503, 504}:
        runtime.client.metrics.error(role, route, kind)
    raise failure(role, what, answer.status, answer.body)
