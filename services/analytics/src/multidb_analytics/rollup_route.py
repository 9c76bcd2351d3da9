"""``GET /events/rollup``: how many events of one name arrived per hour or day (``db:read``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import Parameter

from multidb import auth
from multidb.openapi import protected
from multidb.queries import EventRollup, refuse_repeated
from multidb.service.runtime import RoleRuntime
from multidb_analytics import rollup

DATE_TIME = {"format": "date-time"}


@get("/events/rollup", tags=["events"], **protected(auth.READ, 400, 503, 504))
async def event_rollup(
    state: State,
    request: Request[Any, Any, Any],
    *,
    name: Annotated[str | None, Parameter(description="the event name (required)")] = None,
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
        str | None,
        Parameter(schema_extra={"enum": list(rollup.STEPS)}, description="default: hour"),
    ] = None,
) -> EventRollup:
    """Events named ``name`` per hour or per UTC day, oldest first, zero-filled.

    Served from the hourly rollups kept as events arrive, never by scanning events. At
    most 2000 points: a longer range is a 400 that says so. Needs `db:read` on the
    analytics database.
    """
    refuse_repeated(request.query_params, rollup.PARAMETERS)
    query = rollup.parse_query(name, since, until, step, now=datetime.now(UTC))
    runtime: RoleRuntime = state.runtime
    return await rollup.read_rollup(await runtime.query_pool(), query)


ROUTES = [event_rollup]
