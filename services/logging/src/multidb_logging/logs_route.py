"""``GET /logs``: the application logs, newest first, a page at a time (scope ``db:read``).

The handler parses and checks the parameters (:mod:`multidb_logging.log_search`), runs one
bounded query on the service's query pool (apart from the admin pool that health checks
use) and returns the page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import Parameter

from multidb import auth
from multidb.openapi import protected
from multidb.queries import LogPage, refuse_repeated
from multidb.service.runtime import RoleRuntime
from multidb_logging import log_search

DATE_TIME = {"format": "date-time"}


@get("/logs", tags=["logs"], **protected(auth.READ, 400, 503, 504))
async def search_logs(
    state: State,
    request: Request[Any, Any, Any],
    *,
    level: Annotated[
        str | None,
        Parameter(
            schema_extra={"enum": list(log_search.LEVELS)},
            description="minimum level: WARNING gives WARNING, ERROR and CRITICAL",
        ),
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
        str | None, Parameter(description="the next_cursor of the previous page")
    ] = None,
) -> LogPage:
    """Application log records between ``since`` and ``until``, newest first.

    A page holds at most ``limit`` records (fewer when they hold over 2 MiB of text);
    ``next_cursor`` asks for the next page, ``null`` once there is none. Needs `db:read`
    on the logging database.
    """
    refuse_repeated(request.query_params, log_search.PARAMETERS)
    query = log_search.parse_query(
        level=level,
        since=since,
        until=until,
        logger=logger,
        request_id=request_id,
        q=q,
        limit=limit,
        cursor=cursor,
        now=datetime.now(UTC),
    )
    runtime: RoleRuntime = state.runtime
    return await log_search.search_logs(await runtime.query_pool(), query)


ROUTES = [search_logs]
