"""The role service's ``/backups`` routes (``db:admin``); the gateway forwards
``/database/{name}/backups...`` here. Restoring into a live database is not among them:
that is ``multidb backup restore``, run by a person."""

from __future__ import annotations

from typing import Annotated

from litestar import get, post
from litestar.datastructures import State
from litestar.params import Parameter

from multidb import auth
from multidb.backups.manager import BackupManager
from multidb.backups.wire import BACKUP_ID, BackupList, BackupManifest, OperationStarted
from multidb.openapi import protected

# The id's format, documented; not checked by Litestar: the check, with a message that
# says what an id is, is the manager's (and the gateway's), a 400 either way.
BackupIdParameter = Annotated[
    str,
    Parameter(
        schema_extra={"pattern": BACKUP_ID.pattern},
        description="the backup's id: 12 lowercase hex digits",
    ),
]


def _manager(state: State) -> BackupManager:
    manager: BackupManager = state.runtime.backups
    return manager


@get("/backups", tags=["backups"], **protected(auth.ADMIN))
async def list_backups(state: State) -> BackupList:
    """The role's backups, newest first, with their manifests (failed ones included)."""
    manager = _manager(state)
    return BackupList(role=manager.role, backups=manager.engine.store.manifests())


@post("/backups", status_code=202, tags=["backups"], **protected(auth.ADMIN, 409, 503))
async def start_backup(state: State) -> OperationStarted:
    """Start a backup (then its verify) now; 409 while another backup operation of the role
    runs, on any replica."""
    return await _manager(state).start("backup")


@get("/backups/{backup_id:str}", tags=["backups"], **protected(auth.ADMIN, 400, 404))
async def show_backup(backup_id: BackupIdParameter, state: State) -> BackupManifest:
    """A backup's status and manifest."""
    return _manager(state).find(backup_id)


@post(
    "/backups/{backup_id:str}/verify",
    status_code=202,
    tags=["backups"],
    **protected(auth.ADMIN, 400, 404, 409, 503),
)
async def verify_backup(backup_id: BackupIdParameter, state: State) -> OperationStarted:
    """Check the dump's sha256 and read the whole archive with ``pg_restore``."""
    return await _manager(state).start("verify", backup_id)


@post(
    "/backups/{backup_id:str}/drill",
    status_code=202,
    tags=["backups"],
    **protected(auth.ADMIN, 400, 404, 409, 503),
)
async def drill_backup(backup_id: BackupIdParameter, state: State) -> OperationStarted:
    """Restore into a scratch database, compare revision and row counts, drop it."""
    return await _manager(state).start("drill", backup_id)


ROUTES = [list_backups, start_backup, show_backup, verify_backup, drill_backup]
