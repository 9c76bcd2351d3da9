"""``/database/{name}/backups...``: a role's backups, through the role's own service.

The gateway checks the caller's ``db:admin`` on that database (``db:admin`` or
``db:admin:<name>``), the role's name (404 when unknown) and the backup id (12 lowercase
hex digits, else 400, as the service says it), then asks the role's service
(``/backups...``, :mod:`multidb.backups.routes`) with the caller's own credentials, as
for every call made on a caller's behalf, so the service checks the caller too.

The service's answer is passed on, status and body, when it is one the route expects:
its 200 or 202, decoded first into :class:`~multidb.backups.wire.BackupList`,
:class:`~multidb.backups.wire.BackupManifest` or
:class:`~multidb.backups.wire.OperationStarted` (and about the database and backup
asked for), and its 400, 404 and 409, decoded first as problems. Anything else is the
gateway's own problem, as for every forwarded call (:mod:`multidb_gateway.forwarding`): a
service that cannot be reached is a 503 (504 when it did not answer in time), its own
503 and 504 keep their meaning, and an answer that does not decode, or a status the route
does not expect, is a 502. The gateway never emits a body it has not validated.
"""

from __future__ import annotations

from typing import Any, TypeVar

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from multidb import auth
from multidb.backups.routes import BackupIdParameter
from multidb.backups.wire import BACKUP_ID, BackupList, BackupManifest, OperationStarted
from multidb.errors import BadGatewayError, BadRequestError, NotFoundError
from multidb.openapi import protected
from multidb_gateway import forwarding
from multidb_gateway.runtime import GatewayRuntime, forward_headers
from multidb_gateway.services import MAX_ANSWER_BYTES, ServiceUnreachableError

JSON = "application/json"
NAMED = auth.PATH_PREFIX + "name"
# A role keeps 48 backups by default (more with a longer MULTI_DB_<ROLE>_BACKUP_KEEP),
# each manifest with a row count per table: a few KiB each.
MAX_LIST_BYTES = 8 * 1024 * 1024
# The service's answers passed on with their problem body, as they came.

T = TypeVar("T", BackupList, BackupManifest, OperationStarted)


def _role(runtime: GatewayRuntime, name: str) -> str:
    if name not in runtime.roles:
        raise NotFoundError(runtime.unknown(name))
    return name


def _checked_id(backup_id: str) -> str:
    if not BACKUP_ID.match(backup_id):
        msg = f"malformed backup id {backup_id[:40]!r}: an id is 12 lowercase hex digits"
        raise BadRequestError(msg)
    return backup_id


async def _forward(
    request: Request[Any, Any, Any],
    state: State,
    name: str,
    *,
    method: str,
    route: str,
    expected: tuple[int, type[T]],
    backup_id: str | None = None,
) -> tuple[Response[bytes], T | None]:
    """Ask ``name``'s service ``method route`` (``{id}`` replaced by ``backup_id``).

    The answer to pass on and, when it is the ``expected`` status, its decoded body (for
    the caller to check it is about what was asked); None with a passed-on problem.
    """
    runtime: GatewayRuntime = state.gateway
    role = _role(runtime, name)
    path = route if backup_id is None else route.replace("{id}", _checked_id(backup_id))
    model = expected[1]
    try:
        answer = await runtime.client.call(
            role,
            method,
            path,
            forward_headers(request),
            runtime.settings.service_timeout_ms,
            max_bytes=MAX_LIST_BYTES if model is BackupList else MAX_ANSWER_BYTES,
            route=route,
        )
    except ServiceUnreachableError as exc:
        raise forwarding.unreachable(role, f"the backups API of {role!r}", exc) from None
    what = f"the backups API of {role!r}"
    return forwarding.passed_on(
        runtime, role=role, route=route, what=what, answer=answer, expected=expected
    )


def _about(role: str, what: str, found: object, asked: object) -> None:
    """A 502 when the service answered about another ``what`` than the one asked for."""
    if found != asked:
        msg = f"the {role} service answered about {what} {found!r}, not {asked!r}"
        raise BadGatewayError(msg)


def _started(
    started: OperationStarted | None, role: str, operation: str, backup_id: str | None
) -> None:
    if started is None:
        return
    _about(role, "role", started.role, role)
    _about(role, "operation", started.operation, operation)
    if backup_id is not None:
        _about(role, "backup", started.id, backup_id)


ERRORS = (502, 503, 504)


@get(
    "/database/{name:str}/backups",
    tags=["backups"],
    **protected(auth.ADMIN, 404, *ERRORS, database=NAMED),
)
async def list_backups(
    name: FromPath[str], request: Request[Any, Any, Any], state: State
) -> Response[BackupList]:
    """The role's backups, newest first, with their manifests (failed ones included)."""
    answer, listed = await _forward(
        request, state, name, method="GET", route="/backups", expected=(200, BackupList)
    )
    if listed is not None:
        _about(name, "role", listed.role, name)
    return answer  # type: ignore[return-value]


@post(
    "/database/{name:str}/backups",
    status_code=202,
    tags=["backups"],
    **protected(auth.ADMIN, 404, 409, *ERRORS, database=NAMED),
)
async def start_backup(
    name: FromPath[str], request: Request[Any, Any, Any], state: State
) -> Response[OperationStarted]:
    """Start a backup of the role (then its verify) now; its `id` is the backup's.

    409 while another backup operation of the role runs (on any replica of its service).
    Follow it with `GET /database/{name}/backups/{id}`.
    """
    answer, started = await _forward(
        request, state, name, method="POST", route="/backups", expected=(202, OperationStarted)
    )
    _started(started, name, "backup", None)
    return answer  # type: ignore[return-value]


@get(
    "/database/{name:str}/backups/{backup_id:str}",
    tags=["backups"],
    **protected(auth.ADMIN, 400, 404, *ERRORS, database=NAMED),
)
async def show_backup(
    name: FromPath[str], backup_id: BackupIdParameter, request: Request[Any, Any, Any], state: State
) -> Response[BackupManifest]:
    """A backup's status and manifest, with its latest verify and drill."""
    answer, manifest = await _forward(
        request,
        state,
        name,
        method="GET",
        route="/backups/{id}",
        expected=(200, BackupManifest),
        backup_id=backup_id,
    )
    if manifest is not None:
        _about(name, "role", manifest.role, name)
        _about(name, "backup", manifest.id, backup_id)
    return answer  # type: ignore[return-value]


@post(
    "/database/{name:str}/backups/{backup_id:str}/verify",
    status_code=202,
    tags=["backups"],
    **protected(auth.ADMIN, 400, 404, 409, *ERRORS, database=NAMED),
)
async def verify_backup(
    name: FromPath[str], backup_id: BackupIdParameter, request: Request[Any, Any, Any], state: State
) -> Response[OperationStarted]:
    """Check the dump's sha256 and read the whole archive with `pg_restore`.

    409 while another backup operation of the role runs, or when the backup is not
    complete. The result is the manifest's `verification`.
    """
    answer, started = await _forward(
        request,
        state,
        name,
        method="POST",
        route="/backups/{id}/verify",
        expected=(202, OperationStarted),
        backup_id=backup_id,
    )
    _started(started, name, "verify", backup_id)
    return answer  # type: ignore[return-value]


@post(
    "/database/{name:str}/backups/{backup_id:str}/drill",
    status_code=202,
    tags=["backups"],
    **protected(auth.ADMIN, 400, 404, 409, *ERRORS, database=NAMED),
)
async def drill_backup(
    name: FromPath[str], backup_id: BackupIdParameter, request: Request[Any, Any, Any], state: State
) -> Response[OperationStarted]:
    """Restore the backup into a scratch database, compare its Alembic revision and row
    counts with the manifest's, drop it.

    409 while another backup operation of the role runs, or when the backup is not
    complete. The result is the manifest's `last_drill`.
    """
    answer, started = await _forward(
        request,
        state,
        name,
        method="POST",
        route="/backups/{id}/drill",
        expected=(202, OperationStarted),
        backup_id=backup_id,
    )
    _started(started, name, "drill", backup_id)
    return answer  # type: ignore[return-value]


ROUTES = [list_backups, start_backup, show_backup, verify_backup, drill_backup]
