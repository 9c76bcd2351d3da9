"""``GET /database/{name}/stats/history``: a role's stats history, from the analytics role.

The gateway checks the caller's ``db:read`` on that database (``db:read`` or
``db:read:<name>``) and the role's name (404 when unknown), then
asks the analytics service's ``GET /stats/history`` with the caller's own credentials,
as for every call made on a caller's behalf, so the service checks the caller too (its
route checks the scope on the database it is asked about, not on analytics). The
parameters are typed here (so the OpenAPI document says what they are, and a malformed
one is the gateway's 400); the analytics service checks the range and step, and its 400
(with its message) is passed on. Its answer is decoded into :class:`~multidb.wire.StatsHistory`
before it is returned; anything else is a 502. No analytics service, or one that cannot
answer, is a 503 (504 when it did not answer in time).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import FromPath, Parameter

from multidb import auth
from multidb.errors import (
    BadGatewayError,
    BadRequestError,
    NotFoundError,
)
from multidb.openapi import protected
from multidb.wire import StatsHistory
from multidb_gateway import forwarding
from multidb_gateway.runtime import GatewayRuntime, forward_headers

ANALYTICS = "analytics"
HISTORY_PATH = "/stats/history"
MAX_HISTORY_BYTES = 4 * 1024 * 1024
JSON = "application/json"
# Documented formats; the parsing (with messages a person reads) is ours and analytics'.
DATE_TIME = {"format": "date-time"}
WHOLE_SECONDS = {"pattern": "^[0-9]+$"}


_decode_history = msgspec.json.Decoder(StatsHistory).decode


def _timestamp(name: str, text: str) -> datetime:
    # Strictly RFC 3339, as documented: a bare number is not a time here.
    try:
        return msgspec.convert(text, datetime)
    except msgspec.ValidationError:
        msg = f"{name}: {text[:64]!r} is not an RFC 3339 timestamp (like 2026-11-29T04:00:00Z)"
        raise BadRequestError(msg) from None


@get(
    "/database/{name:str}/stats/history",
    tags=["database"],
    **protected(auth.READ, 400, 404, 502, 503, 504, database=auth.PATH_PREFIX + "name"),
)
async def stats_history(
    name: FromPath[str],
    request: Request[Any, Any, Any],
    state: State,
    *,
    since: Annotated[
        str | None,
        Parameter(schema_extra=DATE_TIME, description="RFC 3339; default: until - 1 h"),
    ] = None,
    until: Annotated[
        str | None, Parameter(schema_extra=DATE_TIME, description="RFC 3339; default: now")
    ] = None,
    step: Annotated[
        str | None,
        Parameter(schema_extra=WHOLE_SECONDS, description="whole seconds per point, >= 1"),
    ] = None,
) -> Response[StatsHistory]:
    """The role's stats, sampled by the gateway, downsampled to ``step`` seconds.

    One point per step bucket that holds a sample, oldest first; a bucket whose samples
    all failed has ``null`` figures and the reason in ``error``. At most 2000 points:
    a range and step that would give more is a 400 saying which step would do.
    """
    runtime: GatewayRuntime = state.gateway
    if name not in runtime.roles:
        raise NotFoundError(runtime.unknown(name))
    params = {"database": name}
    for key, text in (("since", since), ("until", until)):
        if text is not None:
            params[key] = _timestamp(key, text).isoformat()
    if step is not None:
        params["step"] = step
    body = await forwarding.fetch(
        runtime,
        ANALYTICS,
        HISTORY_PATH,
        forward_headers(request),
        what="stats history",
        params=params,
        max_bytes=MAX_HISTORY_BYTES,
    )
    try:
        history = _decode_history(body)
    except msgspec.DecodeError as exc:
        msg = f"the analytics service answered an unreadable history ({exc})"
        raise BadGatewayError(msg) from None
    if history.database != name:
        msg = f"the analytics service answered the history of {history.database!r}"
        raise BadGatewayError(msg)
    return Response(body, media_type=JSON)  # type: ignore[arg-type]


ROUTES = [stats_history]
