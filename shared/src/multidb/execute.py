"""Safe execute: one user statement against a role's database, under layered guards.

The guards, outermost first: the caller's scopes and plugin votes (before this module);
a low-privilege login (see ``multidb.execute_logins``); the extended protocol, so exactly
one statement (``prepare`` refuses several); a ``READ ONLY`` transaction that is always
rolled back unless the caller asked to write; a server-side ``statement_timeout``; a row
cap. Parameters are bound by name (``:name``) and never interpolated.

Values come back as JSON: numbers and booleans as such; ``numeric`` as strings (exact);
timestamps, dates and times in ISO 8601; intervals as ISO 8601 durations; UUIDs as
strings; ``bytea`` as base64; ``json``/``jsonb`` as JSON values; anything else as its
PostgreSQL text form.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec

from multidb.errors import (
    CONNECTION_ERRORS,
    BadRequestError,
    DatabaseUnavailableError,
    SQLError,
    TimeoutExceededError,
    describe,
)
from multidb.named_params import to_positional
from multidb.wire import ExecuteRequest, ExecuteResult

QUERY_CANCELED = "57014"

# What a JSON parameter becomes for each PostgreSQL parameter type the server inferred.
PARAMETER_TYPES: dict[str, type] = {
    "bool": bool,
    "int2": int,
    "int4": int,
    "int8": int,
    "oid": int,
    "float4": float,
    "float8": float,
    "numeric": Decimal,
    "text": str,
    "varchar": str,
    "bpchar": str,
    "name": str,
    "uuid": uuid.UUID,
    "date": dt.date,
    "time": dt.time,
    "timetz": dt.time,
    "timestamp": dt.datetime,
    "timestamptz": dt.datetime,
    "interval": dt.timedelta,
    "bytea": bytes,
}


class ExecuteLimits(msgspec.Struct, frozen=True, kw_only=True):
    timeout_ms: int
    max_rows: int


def bind_arguments(
    names: list[str], params: Mapping[str, Any], parameters: tuple[Any, ...]
) -> list[Any]:
    """Order ``params`` as ``$1..$n`` and convert each to the type PostgreSQL inferred."""
    missing = [name for name in names if name not in params]
    if missing:
        raise BadRequestError(f"missing parameter(s): {', '.join(':' + n for n in missing)}")
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise BadRequestError(f"unknown parameter(s): {', '.join(':' + n for n in unknown)}")
    arguments = []
    for name, parameter in zip(names, parameters, strict=True):
        value = params[name]
        target = PARAMETER_TYPES.get(parameter.name)
        if target is str and isinstance(value, int | float) and not isinstance(value, bool):
            # An untyped parameter is text to PostgreSQL; a JSON number is meant as its digits.
            value = str(value)
        elif target is not None and value is not None:
            try:
                value = msgspec.convert(value, target, strict=False)
            except msgspec.ValidationError as exc:
                msg = f"parameter :{name} must be a {parameter.name}: {exc}"
                raise BadRequestError(msg) from None
        arguments.append(value)
    return arguments


def to_json_values(rows: list[asyncpg.Record]) -> list[list[Any]]:
    result: list[list[Any]] = msgspec.to_builtins([list(row) for row in rows], enc_hook=str)
    return result


def affected_rows(status: str | None) -> int:
    """Rows a command reported in its status ("INSERT 0 3" → 3, "UPDATE 2" → 2); else 0."""
    last = (status or "").rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


async def _run(
    conn: asyncpg.Connection,
    sql: str,
    names: list[str],
    request: ExecuteRequest,
    limits: ExecuteLimits,
) -> tuple[list[str], list[list[Any]], int, bool, str | None]:
    mode = "READ ONLY" if request.read_only else "READ WRITE"
    # Our own constant text, so the simple protocol is safe here; user SQL never goes this way.
    await conn.execute(f"BEGIN {mode}; SET LOCAL statement_timeout = {int(limits.timeout_ms)}")
    finish = "ROLLBACK"
    try:
        statement = await conn.prepare(sql)
        arguments = bind_arguments(names, request.params, statement.get_parameters())
        columns = [attribute.name for attribute in statement.get_attributes()]
        if columns:
            cursor = await statement.cursor(*arguments)
            rows = await cursor.fetch(limits.max_rows + 1)
            truncated = len(rows) > limits.max_rows
            rows = rows[: limits.max_rows]
            result = to_json_values(rows)
            status, row_count = None, len(result)
        else:
            await statement.fetch(*arguments)
            status = statement.get_statusmsg()
            result, truncated, row_count = [], False, affected_rows(status)
        if not request.read_only:
            finish = "COMMIT"
    finally:
        await conn.execute(finish)
    return columns, result, row_count, truncated, status


async def execute(
    pool: asyncpg.Pool, role: str, request: ExecuteRequest, limits: ExecuteLimits
) -> ExecuteResult:
    """Run ``request`` on ``pool``; raise a :class:`~multidb.errors.MultiDBError` on failure."""
    if not request.query.strip():
        raise BadRequestError("query must not be empty")
    sql, names = to_positional(request.query)
    started = time.perf_counter()
    # The server cancels at statement_timeout; this deadline only covers a stuck network.
    deadline = limits.timeout_ms / 1000 + 2.0
    try:
        async with asyncio.timeout(deadline), pool.acquire() as conn:
            columns, result, row_count, truncated, status = await _run(
                conn, sql, names, request, limits
            )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == QUERY_CANCELED:
            msg = f"the statement ran longer than {limits.timeout_ms} ms and was cancelled"
            raise TimeoutExceededError(msg) from None
        if isinstance(exc, CONNECTION_ERRORS):
            raise DatabaseUnavailableError(
                f"database {role!r} is unavailable: {describe(exc)}"
            ) from None
        raise SQLError(
            exc.args[0] if exc.args else "SQL error",
            sqlstate=exc.sqlstate,
            hint=getattr(exc, "hint", None),
            position=getattr(exc, "position", None),
        ) from None
    except TimeoutError:
        msg = f"no answer from database {role!r} within {deadline:.1f} s"
        raise TimeoutExceededError(msg) from None
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailableError(
            f"database {role!r} is unavailable: {describe(exc)}"
        ) from None
    return ExecuteResult(
        database=role,
        query=request.query,
        params=request.params,
        result=result,
        columns=columns,
        row_count=row_count,
        truncated=truncated,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
        read_only=request.read_only,
        status=status,
    )
