"""Where a role service runs an execute: writes on the primary, reads on a replica.

- A write (``read_only: false``) always runs on the primary; its answer carries ``lsn``,
  the WAL position after its commit.
- A read runs on a standby that serves reads (up, within ``MAX_REPLICA_LAG_MS``), in
  turns; on the primary when none does, or when the caller asks for ``consistency:
  primary`` (or ``X-MultiDB-Consistency: primary``).
- A read carrying ``min_lsn`` (or ``X-MultiDB-Min-LSN``) runs on a standby only once that
  standby has replayed that position: at once if one has, else after waiting at most
  ``MULTI_DB_READ_YOUR_WRITES_WAIT_MS`` for the closest one, else on the primary.
- A read whose standby fails under it (the server gone or shutting down, a recovery
  conflict cancelling the query) runs again on the primary: it is read-only, so running
  it twice changes nothing. A read ended while its server still answers (an operator's
  ``pg_terminate_backend``) is not run again. Writes are never retried.

The answer says where the statement ran (``server``) and why (``routing``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

import asyncpg
import msgspec
from litestar.params import HeaderParameter

from multidb.errors import (
    BadRequestError,
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
    SQLError,
)
from multidb.execute import ExecuteLimits, execute
from multidb.replicas.lsn import parse_lsn
from multidb.replicas.monitor import Node, ReplicaSet
from multidb.wire import ExecuteRequest, ExecuteResult

CONSISTENCY_HEADER = "x-multidb-consistency"
MIN_LSN_HEADER = "x-multidb-min-lsn"
PRIMARY = "primary"
# A standby's SQL error after which the same read runs again on the primary: a recovery
# conflict cancelling the query (the server going away is a connection error).
STANDBY_FAILURES = frozenset({"40001"})

# Why a statement ran where it did: the label values of multidb_execute_routed_total.
WRITE = "write"
FORCED = "forced_primary"
NO_REPLICAS = "no_replicas"
NO_READER = "no_replica_serving"
REPLICA = "replica"
CAUGHT_UP = "replica_caught_up"
BEHIND = "replicas_behind_min_lsn"
REPLICA_FAILED = "replica_failed"
REASONS = (WRITE, FORCED, NO_REPLICAS, NO_READER, REPLICA, CAUGHT_UP, BEHIND, REPLICA_FAILED)

PoolFor = Callable[[Node | None, bool], Awaitable[asyncpg.Pool]]
Waiting = Callable[[Node | None, bool], contextlib.AbstractContextManager[None]]
Counted = Callable[[str, str], None]


# The routing headers, declared on the execute routes (so OpenAPI documents them).
ConsistencyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="X-MultiDB-Consistency",
        required=False,
        description="`primary`: run this read on the primary (as `consistency` in the body)",
    ),
]
MinLsnHeader = Annotated[
    str | None,
    HeaderParameter(
        name="X-MultiDB-Min-LSN",
        required=False,
        description=(
            "The `lsn` of an earlier write: a replica serves this read only once it has "
            "replayed it (as `min_lsn` in the body)"
        ),
    ),
]


def from_headers(
    request: ExecuteRequest, consistency: str | None, min_lsn: str | None
) -> ExecuteRequest:
    """``request`` with the routing headers applied where its body says nothing."""
    changes: dict[str, str] = {}
    if consistency is not None and request.consistency is None:
        value = consistency.strip().lower()
        if value not in {"any", PRIMARY}:
            msg = f"X-MultiDB-Consistency: must be 'primary' or 'any' (got {consistency[:40]!r})"
            raise BadRequestError(msg)
        changes["consistency"] = value
    if min_lsn is not None and request.min_lsn is None:
        parse_lsn(min_lsn, "X-MultiDB-Min-LSN")
        changes["min_lsn"] = min_lsn.strip()
    return msgspec.structs.replace(request, **changes) if changes else request


def _standby_failed(exc: Exception) -> bool:
    if isinstance(exc, DatabaseUnavailableError):
        return True
    return isinstance(exc, SQLError) and exc.extra.get("sqlstate") in STANDBY_FAILURES


def _busy(exc: DatabaseUnavailableError | SQLError) -> bool:
    """Every connection to the standby stayed busy: load, not a failure of the server."""
    return bool(exc.headers and "Retry-After" in exc.headers)


class Router:
    """Runs each execute where the module's rules say (see its docstring)."""

    def __init__(
        self,
        role: str,
        *,
        replicas: ReplicaSet | None,
        pool_for: PoolFor,
        waiting: Waiting,
        limits: ExecuteLimits,
        wait_ms: int,
        counted: Counted,
    ) -> None:
        self.role = role
        self.replicas = replicas
        self.pool_for = pool_for
        self.waiting = waiting
        self.limits = limits
        self.wait_ms = wait_ms
        self.counted = counted

    async def _run(self, node: Node | None, request: ExecuteRequest) -> ExecuteResult:
        read_only = request.read_only
        pool = await self.pool_for(node, read_only)
        return await execute(pool, self.role, request, self.limits, self.waiting(node, read_only))

    async def _on_primary(
        self, request: ExecuteRequest, reason: str, why: str | None, waited_ms: float | None
    ) -> ExecuteResult:
        # A read goes to the server the monitor found writable, on a connection of its
        # own; the cluster's host list (target_session_attrs) is the way when it cannot,
        # and for writes. asyncpg may refuse a server just promoted for a moment longer
        # than the monitor does, which would fail reads in the middle of a failover.
        primary = self.replicas.primary if self.replicas and request.read_only else None
        try:
            result = await self._run(primary, request)
        except DatabaseUnavailableError as exc:
            if primary is None or _busy(exc):
                raise
            result = await self._run(None, request)
        result.server = PRIMARY
        result.routing = why
        result.waited_ms = waited_ms
        self.counted(PRIMARY, reason)
        return result

    async def execute(self, request: ExecuteRequest) -> ExecuteResult:
        if not request.read_only:
            return await self._write(request)
        if request.consistency == PRIMARY:
            return await self._on_primary(request, FORCED, "consistency: primary", None)
        if self.replicas is None:
            return await self._on_primary(request, NO_REPLICAS, None, None)
        return await self._read(self.replicas, request)

    async def _write(self, request: ExecuteRequest) -> ExecuteResult:
        try:
            return await self._on_primary(request, WRITE, None, None)
        except DatabaseUnavailableError as exc:
            if self.replicas is None or _busy(exc) or isinstance(exc, CommitOutcomeUnknownError):
                raise
            # Say what the caller can expect: no writes for now, reads still served.
            readers = len(self.replicas.readers())
            reads = f"{readers} replica(s) still serve reads" if readers else "no replica does"
            msg = (
                f"the primary of {self.role!r} is unreachable ({exc.detail}): writes are "
                f"refused until a primary is back; {reads}"
            )
            raise DatabaseUnavailableError(msg) from None

    async def _read(self, replicas: ReplicaSet, request: ExecuteRequest) -> ExecuteResult:
        position = None if request.min_lsn is None else parse_lsn(request.min_lsn)
        node = replicas.pick(position)
        if node is None:
            why = "no replica is up and within the lag bound"
            return await self._on_primary(request, NO_READER, why, None)
        reason, why, waited_ms = REPLICA, "read on a replica", None
        if position is not None:
            started = time.perf_counter()
            reached = await replicas.wait_replayed(node, position, self.wait_ms / 1000)
            waited_ms = round((time.perf_counter() - started) * 1000, 3)
            if not reached:
                why = (
                    f"no replica had replayed min_lsn {request.min_lsn} within "
                    f"{self.wait_ms} ms (MULTI_DB_READ_YOUR_WRITES_WAIT_MS)"
                )
                return await self._on_primary(request, BEHIND, why, waited_ms)
            reason, why = CAUGHT_UP, f"the replica had replayed min_lsn {request.min_lsn}"
        try:
            result = await self._run(node, request)
        except (DatabaseUnavailableError, SQLError) as exc:
            if not _standby_failed(exc):
                raise
            detail = str(exc.detail)[:200]
            if _busy(exc):
                why = f"replica {node.name} was busy ({detail}); ran on the primary"
            elif isinstance(exc, SQLError):
                why = (
                    f"a recovery conflict on replica {node.name} cancelled it; "
                    "ran again on the primary"
                )
            elif await replicas.still_up(node):
                # The server answers: the statement itself was ended (pg_terminate_backend
                # by an operator, say), which is not to be undone on the primary.
                raise
            else:
                replicas.failed(node, detail)
                why = f"replica {node.name} failed ({detail}); ran again on the primary"
            return await self._on_primary(request, REPLICA_FAILED, why, waited_ms)
        result.server = f"replica:{node.name}"
        result.routing = why
        result.waited_ms = waited_ms
        self.counted("replica", reason)
        return result
