"""``GET /database/audit/recent?limit=``: the latest execute audit records, for the dashboard.

The caller needs ``db:admin`` on at least one database (checked by the authentication
middleware, like every scope). The gateway then asks the logging service's
``GET /audit/access`` with its own credential, not the caller's: the audit trail is the
gateway's record, read on behalf of an admin it has already checked. A caller with
``db:admin`` on every database sees every record; one whose ``db:admin`` names databases
(``db:admin:<role>``) sees the records of those databases only, among the latest
:data:`MAX_LIMIT` records of the trail. The answer is decoded into
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
from multidb.errors import BadGatewayError
from multidb.openapi import protected
from multidb.request_id import request_id_of
from multidb_gateway import forwarding
from multidb_gateway.runtime import GatewayRuntime

LOGGING = "logging"
AUDIT_PATH = "/audit/access"
DEFAULT_LIMIT = 20
MAX_LIMIT = 200
# 200 records, each with a 2 KiB path and a preview and an error at most a few KiB.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
JSON = "application/json"

_decode_records = msgspec.json.Decoder(AccessRecords).decode


@get(
    "/database/audit/recent",
    tags=["database"],
    **protected(auth.ADMIN, 400, 502, 503, 504, database=auth.ANY_DATABASE),
    description=(
        "The latest `limit` execute audit records (default 20, at most 200), newest first.\n\n"
        "Filtered, not refused: with `db:admin` (every database) every record; with "
        "`db:admin:<role>` only the records of those databases, found among the latest 200 "
        "of the trail (so possibly fewer than `limit`). A caller who administers no "
        "configured database gets 403."
    ),
)
async def audit_recent(
    request: Request[Any, Any, Any],
    state: State,
    limit: Annotated[
        int, Parameter(ge=1, le=MAX_LIMIT, description="how many records, newest first")
    ] = DEFAULT_LIMIT,
) -> Response[AccessRecords]:
    """The latest ``limit`` execute audit records (default 20, at most 200), newest first.

    Filtered: with `db:admin` (every database) every record; with `db:admin:<role>` only
    the records of those databases, found among the latest 200 of the trail (so possibly
    fewer than ``limit``). A caller who administers no database gets 403.
    """
    runtime: GatewayRuntime = state.gateway
    principal: auth.Principal = request.user
    everything = principal.allows(auth.ADMIN, None)
    allowed = set() if everything else set(runtime.visible(request, auth.ADMIN))
    headers = {**runtime.credential.headers(), "x-request-id": request_id_of(request)}
    body = await forwarding.fetch(
        runtime,
        LOGGING,
        AUDIT_PATH,
        headers,
        what="the audit trail",
        params={"limit": str(limit if everything else MAX_LIMIT)},
        max_bytes=MAX_ANSWER_BYTES,
    )
    try:
        records = _decode_records(body)
    except msgspec.DecodeError as exc:
        msg = f"the logging service answered unreadable audit records ({exc})"
        raise BadGatewayError(msg) from None
    asked = limit if everything else MAX_LIMIT
    if len(records.records) > asked:
        msg = f"the logging service answered {len(records.records)} records for {asked}"
        raise BadGatewayError(msg)
    if everything:
        return Response(body, media_type=JSON)  # type: ignore[arg-type]
    shown = [record for record in records.records if record.target_role in allowed][:limit]
    return Response(AccessRecords(records=shown))


ROUTES = [audit_recent]
