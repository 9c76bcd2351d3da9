"""Every error a service or the gateway answers is ``application/problem+json`` (RFC 9457).

Litestar's ``ProblemDetailsPlugin`` renders them; this module only says how each kind of
exception maps to a problem. No traceback, connection string or password reaches a
response: unexpected exceptions become a bare 500, and the log gets their type and where
they were raised (file:line in function), never their message or locals.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from litestar.exceptions import HTTPException
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)

from multidb.errors import MultiDBError, trace

log = logging.getLogger("multidb.errors")

MEDIA_TYPE = "application/problem+json"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _from_domain(exc: MultiDBError) -> ProblemDetailsException:
    extra = {key: value for key, value in exc.extra.items() if value is not None}
    return ProblemDetailsException(
        detail=exc.detail,
        status_code=exc.status_code,
        title=exc.title,
        headers=exc.headers,
        extra=extra or None,
    )


def _from_http(exc: HTTPException) -> ProblemDetailsException:
    # Validation errors carry a list of {message, key, source}: keep them under "errors".
    extra = {"errors": exc.extra} if isinstance(exc.extra, list) else exc.extra or None
    return ProblemDetailsException(
        detail=exc.detail,
        status_code=exc.status_code,
        title=_phrase(exc.status_code),
        headers=exc.headers,
        extra=extra,
    )


def _from_recursion(_: RecursionError) -> ProblemDetailsException:
    # Raised by the JSON decoder on input nested deeper than it follows: the caller's bytes.
    return ProblemDetailsException(
        detail="the request body is nested too deeply", status_code=400, title="Bad request"
    )


def _from_unexpected(exc: Exception) -> ProblemDetailsException:
    # Type and frames only: arguments of driver errors may quote connection details.
    log.error("unhandled %s", trace(exc))
    return ProblemDetailsException(
        detail="the server failed to answer this request", status_code=500, title="Internal error"
    )


def problem_details_plugin() -> ProblemDetailsPlugin:
    mapping: dict[type[Exception], Any] = {
        MultiDBError: _from_domain,
        HTTPException: _from_http,
        RecursionError: _from_recursion,
        Exception: _from_unexpected,
    }
    return ProblemDetailsPlugin(ProblemDetailsConfig(exception_to_problem_detail_map=mapping))
