"""Wire types: the bodies services and the gateway send and receive.

Field names follow the spec (``database``, ``status``, ``test_query``, ...); fields may be
added, none renamed. ``omit_defaults`` keeps optional fields (``error``, ``detail``) out of
an answer that has nothing to say in them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from multidb.backups.wire import BackupState

HEALTHY = "healthy"
# The primary answers, but a replica is down or too far behind to serve reads (still 200).
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"
AVAILABLE = "available"
UNAVAILABLE = "unavailable"
TruncatedBy = Literal["rows", "bytes"]
# A WAL position as PostgreSQL writes it (pg_lsn): two hexadecimal halves.
Lsn = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")]
NodeRole = Literal["primary", "standby", "unknown"]
NodeState = Literal["up", "down", "paused"]


class NodeReport(msgspec.Struct, kw_only=True):
    """One server of a role with replicas or a cluster, as its monitor last saw it.

    ``role``: ``primary`` (accepts writes) or ``standby``; ``state``: ``up``, ``down`` or
    ``paused`` (a standby whose replay is paused). ``lag_bytes``: WAL the standby has not
    replayed yet; ``lag_s``: for how long it has been behind, 0 once its replay position
    equals the primary's (an idle primary is no lag). ``serving_reads``: whether reads are
    routed to it now. ``checked_age_s``: how old this reading is.
    """

    address: str
    role: NodeRole
    state: NodeState
    serving_reads: bool
    lag_bytes: int | None = None
    lag_s: float | None = None
    replay_lsn: str | None = None
    connections: int | None = None
    checked_age_s: float | None = None
    error: str | None = None


class HealthReport(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``status``: ``healthy``; ``degraded`` (200, with ``reason``) when the primary answers
    but a replica is down or lagging; ``unhealthy`` (503, with ``error``) when no primary
    does. ``nodes``: the role's primary and replicas, for a role that has replicas."""

    database: str
    status: str
    test_query: int | None = None
    database_name: str | None = None
    version: str | None = None
    latency_ms: float | None = None
    error: str | None = None
    reason: str | None = None
    nodes: list[NodeReport] | None = None
    detail: dict[str, Any] | None = None


class StatsReport(msgspec.Struct, kw_only=True, omit_defaults=True):
    database: str
    status: str
    table_count: int | None = None
    table_count_age_s: float | None = None
    database_size: str | None = None
    database_size_bytes: int | None = None
    database_size_age_s: float | None = None
    connections: int | None = None
    commits: int | None = None
    rollbacks: int | None = None
    deadlocks: int | None = None
    temp_bytes: int | None = None
    cache_hit_ratio: float | None = None
    error: str | None = None
    # Per server (connections, replay lag) for a role with replicas or a cluster.
    nodes: list[NodeReport] | None = None
    detail: dict[str, Any] | None = None


class ModelsReport(msgspec.Struct, kw_only=True):
    database: str
    models: list[str]


class BackupInfo(msgspec.Struct, kw_only=True):
    """Where a role's data lives: never the password (the url is redacted).

    ``sslmode``: how its connections use TLS (libpq's modes, ``prefer`` unless set);
    ``sslrootcert``, ``sslcert``, ``sslkey``: the configured certificate and key *paths*
    (``null`` when unset), never a file's content. ``backups``: the role's newest good
    backup (``last_backup``), ``next_backup_at`` and ``stale`` (see
    :class:`~multidb.backups.wire.BackupState`); only a role's service knows them.
    """

    host: str
    port: int
    database: str
    username: str
    url: str
    sslmode: str = "prefer"
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    # The role's backups: newest good one, next due, stale; see multidb.backups.
    backups: BackupState | None = None


class ExecuteRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``query``: one SQL statement (one that is only blanks is refused too).

    ``consistency``: ``primary`` runs a read on the primary; ``any`` (the default) lets it
    go to a replica within the lag bound. ``min_lsn``: the ``lsn`` an earlier write
    answered; a replica serves this read only once it has replayed that far (the headers
    ``X-MultiDB-Consistency`` and ``X-MultiDB-Min-LSN`` say the same; the body wins).
    """

    query: Annotated[str, msgspec.Meta(min_length=1)]
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    read_only: bool = True
    consistency: Literal["any", "primary"] | None = None
    min_lsn: Lsn | None = None


class ExecuteResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``result``: the rows as a JSON array of arrays, encoded while they were fetched.
    ``truncated_by``: ``"rows"`` or ``"bytes"``, the cap that cut the result, when it was cut.
    """

    database: str
    query: str
    params: dict[str, Any]
    result: msgspec.Raw
    columns: list[str]
    row_count: int
    truncated: bool
    duration_ms: float
    read_only: bool
    truncated_by: TruncatedBy | None = None
    status: str | None = None
    # Where it ran: "primary" or "replica:<host:port>"; why there; the WAL position after
    # a write's commit (carry it as min_lsn); how long a min_lsn read waited for a replica.
    server: str | None = None
    routing: str | None = None
    lsn: str | None = None
    waited_ms: float | None = None


class ExecuteVote(msgspec.Struct, frozen=True, kw_only=True):
    """A plugin's verdict on an execute request (see ``multidb_execute_vote``)."""

    allow: bool
    reason: str = ""


class Readiness(msgspec.Struct, kw_only=True, omit_defaults=True):
    status: str
    database: str
    revision: str | None = None
    head: str | None = None
    error: str | None = None
    jobs: list[dict[str, Any]] | None = None


class HistoryPoint(msgspec.Struct, kw_only=True):
    """One step bucket of a role's stats history (see ``GET /stats/history``).

    ``t``: the bucket's start. ``samples``: samples in the bucket; ``unavailable``: how
    many of them were failures. Gauges (``table_count``, ``database_size_bytes``,
    ``connections``) and counters (``commits``, ``rollbacks``, ``deadlocks``,
    ``temp_bytes``) are the bucket's latest good value; ``cache_hit_ratio`` is the
    average of its good samples. Every figure is ``None`` when no sample in the bucket
    was good; ``error`` is the bucket's latest failure reason (``None`` when none failed).
    """

    t: Annotated[datetime, msgspec.Meta(tz=True)]
    samples: int
    unavailable: int
    table_count: int | None
    database_size_bytes: int | None
    connections: int | None
    commits: int | None
    rollbacks: int | None
    cache_hit_ratio: float | None
    error: str | None
    deadlocks: int | None = None
    temp_bytes: int | None = None


class StatsHistory(msgspec.Struct, kw_only=True):
    """A role's stats history between ``since`` and ``until`` at ``step_s`` seconds."""

    database: str
    since: Annotated[datetime, msgspec.Meta(tz=True)]
    until: Annotated[datetime, msgspec.Meta(tz=True)]
    step_s: int
    points: list[HistoryPoint]
