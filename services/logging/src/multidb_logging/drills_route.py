"""``POST /backups/drills``: restore drill results the role services send, stored once each;
``GET /backups/drills?role=&limit=``: the latest drills, newest first.

A role service drills its own backups (:mod:`multidb.backups`) and delivers each result
here, sending it again until it is stored. A batch goes in with one statement over
``unnest`` of one array per column; ``ON CONFLICT (drill_id) DO NOTHING`` stores each drill
once, however often it is sent, so ``stored`` counts only the rows new to the table.

The handler decodes the body itself, record by record, so that a refused batch says which
record and which field were wrong (``index`` and ``field`` in the problem).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, cast

import asyncpg
import msgspec
from litestar import Request, get, post
from litestar.datastructures import State
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.params import Parameter

from multidb import auth
from multidb.backups.wire import DrillRecord
from multidb.errors import (
    BadRequestError,
    DatabaseUnavailableError,
    TimeoutExceededError,
    describe,
)
from multidb.execute import affected_rows
from multidb.openapi import protected
from multidb.service.runtime import UNREACHABLE, RoleRuntime

MAX_BATCH = 100
INSERT_TIMEOUT_S = 10.0
RECENT_DEFAULT = 50
RECENT_MAX = 500
RECENT_TIMEOUT_S = 5.0

COLUMNS = tuple(DrillRecord.__struct_fields__)

INSERT_DRILLS = """
INSERT INTO backup_drills (
    drill_id, role, backup_id, started_at, finished_at, duration_s, passed, differences
)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
    $6::float8[], $7::bool[], $8::jsonb[]
)
ON CONFLICT (drill_id) DO NOTHING
"""

# Both read off ix_backup_drills_role_finished_at (or a top-N sort of a table that grows by
# a few rows a day) and stop at the limit. Two statements, not ``$2 IS NULL OR role = $2``:
# a prepared statement's generic plan could not use the index for the latter.
_SELECT = f"SELECT {', '.join(COLUMNS)}, recorded_at FROM backup_drills"
_NEWEST = "ORDER BY finished_at DESC, drill_id DESC LIMIT $1"
SELECT_RECENT = f"{_SELECT} {_NEWEST}"
SELECT_RECENT_OF_ROLE = f"{_SELECT} WHERE role = $2 {_NEWEST}"

_decode_batch = msgspec.json.Decoder(list[msgspec.Raw]).decode
_decode_record = msgspec.json.Decoder(DrillRecord).decode
_decode_differences = msgspec.json.Decoder(list[str]).decode
_encode = msgspec.json.encode
# msgspec's messages end with where the value was (" - at `$.differences[3]`"), or name the
# field themselves ("Object missing required field `role`").
_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_NAMED_FIELD = re.compile(r"field `(?P<field>[^`]+)`")


class DrillsReceipt(msgspec.Struct, kw_only=True):
    """``received``: records in the batch; ``stored``: rows new to the table."""

    received: int
    stored: int


class RecordedDrill(DrillRecord, frozen=True, kw_only=True):
    """A stored drill: the record as sent, and when this service stored it."""

    recorded_at: datetime


class DrillList(msgspec.Struct, kw_only=True):
    drills: list[RecordedDrill]


def _batch_schema() -> Schema:
    # msgspec's own JSON schema of a record: the one the decoder enforces.
    _, components = msgspec.json.schema_components([DrillRecord])
    record = cast(Schema, components[DrillRecord.__name__])
    return Schema(type="array", items=record, min_items=1, max_items=MAX_BATCH)  # type: ignore[arg-type]


@dataclass
class DrillBatchBody(Operation):
    """The operation of ``POST /backups/drills``, whose handler reads the body itself:
    documents the body it accepts."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True, content={"application/json": OpenAPIMediaType(schema=_batch_schema())}
        )


def _refused(index: int, exc: msgspec.ValidationError) -> BadRequestError:
    message = str(exc)
    field = None
    if at := _AT.search(message):
        message, field = message[: at.start()], at["path"] or None
    elif named := _NAMED_FIELD.search(message):
        field = named["field"]
    where = f"drill record {index}" + (f", field '{field}'" if field else "")
    return BadRequestError(f"{where}: {message}", index=index, field=field)


def decode_drills(body: bytes) -> list[DrillRecord]:
    """The records of a ``POST /backups/drills`` body, or a 400 that names the first bad
    record's index and field."""
    try:
        items = _decode_batch(body)
    except msgspec.DecodeError as exc:
        raise BadRequestError(f"the body is not a JSON array of drill records: {exc}") from None
    except RecursionError:
        raise BadRequestError("the body is nested too deeply") from None
    if not 1 <= len(items) <= MAX_BATCH:
        msg = f"a batch holds 1 to {MAX_BATCH} drill records, this one {len(items)}"
        raise BadRequestError(msg)
    records: list[DrillRecord] = []
    for index, item in enumerate(items):
        try:
            record = _decode_record(item)
        except msgspec.ValidationError as exc:
            raise _refused(index, exc) from None
        except (msgspec.DecodeError, RecursionError):
            raise BadRequestError(f"drill record {index} is nested too deeply") from None
        if record.finished_at < record.started_at:
            msg = f"drill record {index}, field 'finished_at': before started_at"
            raise BadRequestError(msg, index=index, field="finished_at")
        records.append(record)
    return records


def _storable(value: str) -> str:
    # PostgreSQL text and jsonb cannot hold NUL, and a restore error may quote one.
    return value.replace("\x00", "\ufffd")


def _columns(records: list[DrillRecord]) -> list[list[Any]]:
    return [
        [_storable(r.drill_id) for r in records],
        [_storable(r.role) for r in records],
        [r.backup_id for r in records],
        [r.started_at for r in records],
        [r.finished_at for r in records],
        [r.duration_s for r in records],
        [r.passed for r in records],
        [_encode([_storable(d) for d in r.differences]).decode() for r in records],
    ]


async def store_drills(conn: asyncpg.Connection, records: list[DrillRecord]) -> int:
    """Store ``records`` in one statement; how many were new to the table."""
    status = await conn.execute(INSERT_DRILLS, *_columns(records))
    return affected_rows(status)


async def recent_drills(conn: asyncpg.Connection, role: str | None, limit: int) -> DrillList:
    """The latest ``limit`` drills (of ``role``, when given), newest first."""
    if role:
        rows = await conn.fetch(SELECT_RECENT_OF_ROLE, limit, role)
    else:
        rows = await conn.fetch(SELECT_RECENT, limit)
    drills = [
        RecordedDrill(**{**dict(row), "differences": _decode_differences(row["differences"])})
        for row in rows
    ]
    return DrillList(drills=drills)


def _unavailable(exc: BaseException, timeout_s: float) -> DatabaseUnavailableError:
    reason = describe(exc, int(timeout_s * 1000))
    return DatabaseUnavailableError(f"database 'logging' is unavailable: {reason}")


@post(
    "/backups/drills",
    status_code=200,
    tags=["backups"],
    operation_class=DrillBatchBody,
    **protected(auth.ADMIN, 400, 413, 503, database=auth.EVERY_DATABASE),
)
async def record_drills(request: Request[auth.Principal, Any, Any], state: State) -> DrillsReceipt:
    """Store a batch of 1 to 100 drill results; each ``drill_id`` is stored once."""
    records = decode_drills(await request.body())
    runtime: RoleRuntime = state.runtime
    try:
        async with asyncio.timeout(INSERT_TIMEOUT_S), runtime.admin.acquire() as conn:
            stored = await store_drills(conn, records)
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
        raise BadRequestError(f"a drill record was refused: {describe(exc)}") from None
    except UNREACHABLE as exc:
        raise _unavailable(exc, INSERT_TIMEOUT_S) from None
    return DrillsReceipt(received=len(records), stored=stored)


@get(
    "/backups/drills",
    tags=["backups"],
    **protected(auth.ADMIN, 400, 503, 504, database=auth.EVERY_DATABASE),
)
async def list_drills(
    state: State,
    role: Annotated[
        str | None, Parameter(description="only this role's drills (none for another name)")
    ] = None,
    limit: Annotated[
        int, Parameter(ge=1, le=RECENT_MAX, description="how many drills, newest first")
    ] = RECENT_DEFAULT,
) -> DrillList:
    """The latest ``limit`` drill results (at most 500), newest first by ``finished_at``."""
    runtime: RoleRuntime = state.runtime
    try:
        async with asyncio.timeout(RECENT_TIMEOUT_S), runtime.admin.acquire() as conn:
            return await recent_drills(conn, role, limit)
    except TimeoutError:
        msg = f"reading the drill results took over {RECENT_TIMEOUT_S:g} s"
        raise TimeoutExceededError(msg) from None
    except UNREACHABLE as exc:
        raise _unavailable(exc, RECENT_TIMEOUT_S) from None


ROUTES = [record_drills, list_drills]
