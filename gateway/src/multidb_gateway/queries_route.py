"""``GET /database/logging/logs`` and ``GET /database/analytics/events/rollup``.

The role services' own read APIs, reached through the gateway: the caller needs
``db:read`` on that database (``db:read`` or ``db:read:<role>``); a role that is not
configured is a 404. The gateway asks the service (``GET /logs``, ``GET /events/rollup``)
with the caller's own credentials. ``since`` and ``until`` must be RFC 3339 timestamps here,
as documented; the other parameters it knows are passed on unchanged: the service checks
them, and its 400 (with its message) is passed on. The answer is decoded
into its wire type before it is returned (anything else is a 502); a service that cannot
answer is a 503 (504 when it did not answer in time).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import Parameter

from multidb import auth
from multidb.errors import BadGatewayError, BadRequestError, NotFoundError
from multidb.openapi import protected
from multidb.queries import EventRollup, LogPage, refuse_repeated
from multidb_gateway import forwarding
from multidb_gateway.runtime import GatewayRuntime, forward_headers

LOGGING = "logging"
ANALYTICS = "analytics"
JSON = "application/json"
# A page is at most 2 MiB of stored text (the logging service's bound); its JSON escapes
# may take more room than the text.
MAX_LOGS_BYTES = 16 * 1024 * 1024
MAX_ROLLUP_BYTES = 1024 * 1024
DATE_TIME = {"format": "date-time"}
LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
STEPS = ["hour", "day"]

_decode_page = msgspec.json.Decoder(LogPage).decode
_decode_rollup = msgspec.json.Decoder(EventRollup).decode


def _check(request: Request[auth.Principal, Any, Any], runtime: GatewayRuntime, role: str) -> None:
    # The middleware checked db:read somewhere; this route's data is one role's.
    auth.require(request.user, auth.READ, role)
    if role not in runtime.roles:
        raise NotFoundError(runtime.unknown(role))


def _timestamp(name: str, text: str) -> str:
    # Strictly RFC 3339, as documented (the services read any ISO-8601 timestamp).
    try:
        return msgspec.convert(text, datetime).isoformat()
    except msgspec.ValidationError:
        msg = f"{name}: {text[:64]!r} is not an RFC 3339 timestamp (like 2026-11-29T04:00:00Z)"
        raise BadRequestError(msg) from None


def _given(params: dict[str, str | None]) -> dict[str, str]:
    given = {key: value for key, value in params.items() if value is not None}
    for key in ("since", "until"):
        if key in given:
            given[key] = _timestamp(key, given[key])
    return given


async def _fetch(
    request: Request[auth.Principal, Any, Any],
    state: State,
    role: str,
    path: str,
    *,
    what: str,
    params: dict[str, str | None],
    max_bytes: int,
) -> bytes:
    runtime: GatewayRuntime = state.gateway
    _check(request, runtime, role)
    refuse_repeated(request.query_params, params)
    return await forwarding.fetch(
        runtime,
        role,
        path,
        forward_headers(request),
        what=what,
        params=_given(params),
        max_bytes=max_bytes,
    )


@get(
    "/database/logging/logs",
    tags=["database"],
    **protected(auth.READ, 400, 404, 502, 503, 504, database=auth.ANY_DATABASE),
)
async def logs(
    request: Request[auth.Principal, Any, Any],
    state: State,
    *,
    level: Annotated[
        str | None,
        Parameter(schema_extra={"enum": LEVELS}, description="minimum level"),
    ] = None,
    since: Annotated[
        str | None,
        Parameter(schema_extra=DATE_TIME, description="ISO-8601; default: until - 24 h"),
    ] = None,
    until: Annotated[
        str | None,
        Parameter(schema_extra=DATE_TIME, description="ISO-8601, excluded; default: now"),
    ] = None,
    logger: Annotated[str | None, Parameter(description="this logger only (exact)")] = None,
    request_id: Annotated[str | None, Parameter(description="this request only (exact)")] = None,
    q: Annotated[
        str | None,
        Parameter(description="messages holding this text (any case; % and _ are literal)"),
    ] = None,
    limit: Annotated[
        str | None,
        Parameter(
            schema_extra={"pattern": "^[0-9]+$"}, description="rows per page, 1..500; default 100"
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Parameter(
            schema_extra={"maxLength": 200}, description="the next_cursor of the previous page"
        ),
    ] = None,
) -> Response[LogPage]:
    """The logging database's application logs, newest first, a page at a time.

    ``level`` is a minimum (WARNING gives WARNING, ERROR and CRITICAL); ``q`` matches
    messages holding the text in any case. A page holds at most ``limit`` records (fewer
    when they hold over 2 MiB of text); pass ``next_cursor`` back as ``cursor`` for the
    next (older) page, ``null`` once there is none. Needs `db:read` on `logging`.
    """
    params = {
        "level": level,
        "since": since,
        "until": until,
        "logger": logger,
        "request_id": request_id,
        "q": q,
        "limit": limit,
        "cursor": cursor,
    }
    body = await _fetch(
        request, state, LOGGING, "/logs", what="the logs", params=params, max_bytes=MAX_LOGS_BYTES
    )
    try:
        _decode_page(body)
    except msgspec.DecodeError as exc:
        msg = f"the logging service answered an unreadable page of logs ({exc})"
        raise BadGatewayError(msg) from None
    return Response(body, media_type=JSON)  # type: ignore[arg-type]


@get(
    "/database/analytics/events/rollup",
    tags=["database"],
    **protected(auth.READ, 400, 404, 502, 503, 504, database=auth.ANY_DATABASE),
)
async def event_rollup(
    request: Request[auth.Principal, Any, Any],
    state: State,
    *,
    name: Annotated[str, Parameter(schema_extra={"maxLength": 100}, description="the event name")],
    since: Annotated[
        str | None,
        Parameter(
            schema_extra=DATE_TIME, description="ISO-8601; default: until - 24 h (30 days by day)"
        ),
    ] = None,
    until: Annotated[
        str | None, Parameter(schema_extra=DATE_TIME, description="ISO-8601; default: now")
    ] = None,
    step: Annotated[
        str | None, Parameter(schema_extra={"enum": STEPS}, description="default: hour")
    ] = None,
) -> Response[EventRollup]:
    """Events named ``name`` per hour or per UTC day, oldest first, zero-filled.

    Served from the analytics service's hourly rollups, never by scanning events. At most
    2000 points: a longer range is a 400 that says so. Needs `db:read` on `analytics`.
    """
    params = {"name": name, "since": since, "until": until, "step": step}
    body = await _fetch(
        request,
        state,
        ANALYTICS,
        "/events/rollup",
        what="the event rollup",
        params=params,
        max_bytes=MAX_ROLLUP_BYTES,
    )
    try:
        rollup = _decode_rollup(body)
    except msgspec.DecodeError as exc:
        msg = f"the analytics service answered an unreadable rollup ({exc})"
        raise BadGatewayError(msg) from None
    if rollup.name != name:
        msg = f"the analytics service answered the rollup of {rollup.name!r}"
        raise BadGatewayError(msg)
    return Response(body, media_type=JSON)  # type: ignore[arg-type]


ROUTES = [logs, event_rollup]
