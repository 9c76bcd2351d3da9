"""Which server of a role is the primary, how far behind each replica is, which serve reads.

A :class:`ReplicaSet` probes every server of a role (its ``HOST`` list and its ``REPLICAS``)
concurrently, each under its own deadline, every :data:`CHECK_INTERVAL_S`: one query says
whether the server is in recovery, its WAL position (the primary's current position, a
standby's replay position), whether replay is paused and how many backends it has.

Lag is measured against the primary, in bytes and in time. Time is *how long the standby
has been behind*: the monitor keeps the primary's positions with the moment it saw them,
and a standby's lag is the time since the primary first passed the standby's replay
position. It is 0 whenever the standby has replayed everything the primary wrote, so an
idle primary is no lag (``now() - pg_last_xact_replay_timestamp()``, postgres_exporter's
measure, grows without bound on an idle primary).

A standby serves reads while it answers and its lag is within ``MAX_REPLICA_LAG_MS``.
Without a reachable primary nothing new can be written, so the standbys' lag is taken
against the last position the primary was seen at and they keep serving.

When the primary changes (a failover, or the primary going away), ``on_primary_change`` is
called: the role's service drops its pooled connections to the old primary.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import Literal

import asyncpg
import msgspec

from multidb.errors import describe
from multidb.replicas.lsn import format_lsn
from multidb.settings import Address, DatabaseSettings, address_text
from multidb.wire import NodeReport

log = logging.getLogger("multidb.replicas")

CHECK_INTERVAL_S = 0.5
# A read waiting for a replica to replay a position asks it this often.
REPLAY_POLL_S = 0.005
# The primary's positions are remembered this long: a standby further behind than that
# has at least this lag (and serves no reads under any sensible bound).
HISTORY_S = 15 * 60.0

PROBE_SQL = """
SELECT pg_is_in_recovery() AS standby,
       pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                            ELSE pg_current_wal_lsn() END, '0/0')::int8 AS position,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END AS paused,
       (SELECT numbackends FROM pg_stat_database WHERE datname = current_database())
         AS connections
"""
REPLAY_SQL = "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8"

Listed = Literal["host", "replica"]


async def _keep_session(_: asyncpg.Connection) -> None:
    return None


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    """One successful probe of one server."""

    standby: bool
    position: int | None
    paused: bool
    connections: int | None
    at: float


class Node:
    """One server of the role: where it is, how it is reached, what was last seen of it."""

    def __init__(self, address: Address, settings: DatabaseSettings, listed: Listed) -> None:
        self.address = address
        self.name = address_text(address)
        self.settings = settings
        self.listed = listed
        # The monitor's own connections (its probes and read-your-writes polls), apart
        # from the connections statements run on.
        self.pool: asyncpg.Pool | None = None
        self.reading: Reading | None = None
        self.error: str | None = None
        self.checked_at: float | None = None
        self.lag_bytes: int | None = None
        self.lag_s: float | None = None
        self.serving = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._poller: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self.error is None and self.reading is not None

    @property
    def is_primary(self) -> bool:
        return self.up and self.reading is not None and not self.reading.standby

    @property
    def is_standby(self) -> bool:
        return self.up and self.reading is not None and self.reading.standby

    @property
    def position(self) -> int | None:
        return None if self.reading is None else self.reading.position

    def replayed(self, position: int) -> bool:
        return self.position is not None and self.position >= position

    def report(self, now: float) -> NodeReport:
        reading = self.reading
        # A server that does not answer may come back as anything: its role is unknown.
        role: Literal["primary", "standby", "unknown"] = "unknown"
        if reading is not None and self.up:
            role = "standby" if reading.standby else "primary"
        state: Literal["up", "down", "paused"] = "up"
        if not self.up:
            state = "down"
        elif reading is not None and reading.paused:
            state = "paused"
        up = self.up and reading is not None
        return NodeReport(
            address=self.name,
            role=role,
            state=state,
            serving_reads=self.serving,
            lag_bytes=self.lag_bytes if up and role == "standby" else (0 if up else None),
            lag_s=self.lag_s if up and role == "standby" else (0.0 if up else None),
            replay_lsn=format_lsn(reading.position)
            if reading is not None and reading.standby and reading.position is not None
            else None,
            connections=reading.connections if up and reading is not None else None,
            checked_age_s=None if self.checked_at is None else round(now - self.checked_at, 3),
            error=self.error,
        )


class ReplicaSet:
    """The servers of one role, watched in the background (see the module's docstring)."""

    def __init__(
        self,
        database: DatabaseSettings,
        *,
        timeout_ms: int,
        interval_s: float = CHECK_INTERVAL_S,
        on_primary_change: Callable[[], None] | None = None,
    ) -> None:
        self.database = database
        self.role = database.role or "database"
        self.timeout_ms = timeout_ms
        self.interval_s = interval_s
        self.max_lag_ms = database.max_replica_lag_ms
        self.on_primary_change = on_primary_change
        hosts = database.addresses
        self.nodes = [Node(address, database.node(address), "host") for address in hosts]
        self.nodes += [
            Node(address, database.node(address, replica=True), "replica")
            for address in database.replica_addresses
            if address not in hosts
        ]
        self.primary: Node | None = None
        self._seen_primary = False
        self._last_primary_position: int | None = None
        # The primary's positions and when each was seen, oldest first.
        self._times: list[float] = []
        self._positions: list[int] = []
        self._history_of: Node | None = None
        self._turn = itertools.count()
        self._task: asyncio.Task[None] | None = None
        # Reads waiting now for a replica to replay their min_lsn.
        self.waiting_reads = 0

    @staticmethod
    def wanted(database: DatabaseSettings) -> bool:
        """Whether ``database`` has anything to watch: replicas, or a cluster of servers."""
        return database.is_cluster or bool(database.replicas)

    # ---- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the probe pools (nothing connects yet), check once, then keep checking."""
        for node in self.nodes:
            arguments = node.settings.connect_arguments
            node.pool = await asyncpg.create_pool(
                min_size=0,
                max_size=2,
                timeout=self.timeout_ms / 1000,
                command_timeout=None,
                connect=node.settings.connector(),
                reset=_keep_session,
                **arguments,
            )
        await self.check()
        self._task = asyncio.create_task(self._run(), name=f"replicas-{self.role}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for node in self.nodes:
            if node._poller is not None:
                node._poller.cancel()
            if node.pool is not None:
                await node.pool.close()
                node.pool = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception as exc:  # a bug here must not end the watching
                log.error("replica check of %s failed: %s", self.role, describe(exc))

    # ---- probing --------------------------------------------------------------------------

    async def _probe(self, node: Node) -> None:
        if node.pool is None:  # stopped
            return
        try:
            async with asyncio.timeout(self.timeout_ms / 1000), node.pool.acquire() as conn:
                row = await conn.fetchrow(PROBE_SQL)
        except Exception as exc:
            if node.error is None:
                log.warning(
                    "role %s: server %s stopped answering: %s",
                    self.role,
                    node.name,
                    describe(exc, self.timeout_ms),
                )
            node.error = describe(exc, self.timeout_ms)
            node.checked_at = time.monotonic()
            # Its pooled connections are likely dead: the next probe connects anew.
            node.pool.expire_connections()
            return
        if node.error is not None:
            log.info("role %s: server %s answers again", self.role, node.name)
        node.error = None
        node.checked_at = time.monotonic()
        node.reading = Reading(
            standby=row["standby"],
            position=row["position"],
            paused=row["paused"],
            connections=row["connections"],
            at=node.checked_at,
        )

    async def check(self) -> None:
        """Probe every server at once, then work out the primary, the lag, who serves."""
        await asyncio.gather(*(self._probe(node) for node in self.nodes))
        now = time.monotonic()
        primary = next((node for node in self.nodes if node.is_primary), None)
        if primary is not self.primary:
            self._primary_changed(primary)
        if primary is not None and primary.position is not None:
            self._remember(now, primary, primary.position)
        for node in self.nodes:
            self._judge(node, now)

    def _primary_changed(self, primary: Node | None) -> None:
        old = self.primary
        self.primary = primary
        if old is None and not self._seen_primary:
            self._seen_primary = primary is not None
            return  # the first primary found: nothing pooled to drop yet
        self._seen_primary = True
        if primary is None:
            log.warning("role %s: no primary reachable", self.role)
        else:
            log.warning("role %s: the primary is now %s", self.role, primary.name)
        if self.on_primary_change is not None:
            self.on_primary_change()

    def _remember(self, now: float, primary: Node, position: int) -> None:
        if primary is not self._history_of:
            # Another server's positions: the old history says nothing about it.
            self._history_of = primary
            self._times.clear()
            self._positions.clear()
        self._last_primary_position = position
        if not self._positions or position > self._positions[-1]:
            self._times.append(now)
            self._positions.append(position)
        cut = bisect.bisect_left(self._times, now - HISTORY_S)
        if cut:
            del self._times[:cut], self._positions[:cut]

    def _judge(self, node: Node, now: float) -> None:
        if not node.is_standby:
            node.serving = False
            node.lag_bytes = node.lag_s = None
            return
        reference = self._last_primary_position
        replayed = node.position
        if reference is None or replayed is None:
            node.lag_bytes = node.lag_s = None
            # Nothing to measure against (no primary seen yet): it serves what it has.
            node.serving = replayed is not None
            return
        node.lag_bytes = max(0, reference - replayed)
        if node.lag_bytes == 0:
            node.lag_s = 0.0
        else:
            # The first moment the primary was seen past what this standby replayed.
            first = bisect.bisect_right(self._positions, replayed)
            since = self._times[first] if first < len(self._times) else now
            node.lag_s = round(now - since, 3)
        node.serving = node.lag_s * 1000 <= self.max_lag_ms

    def failed(self, node: Node, error: str) -> None:
        """A statement found ``node`` gone: no reads go there until a probe says otherwise."""
        node.serving = False
        node.error = error
        node.checked_at = time.monotonic()

    # ---- choosing -------------------------------------------------------------------------

    def readers(self) -> list[Node]:
        return [node for node in self.nodes if node.serving]

    def pick(self, position: int | None = None) -> Node | None:
        """A standby to read from, in turns; with ``position``, one that has replayed it if
        any has, else the one closest to it. ``None``: no standby serves reads."""
        candidates = self.readers()
        if not candidates:
            return None
        if position is not None:
            caught_up = [node for node in candidates if node.replayed(position)]
            if not caught_up:
                return max(candidates, key=lambda node: node.position or 0)
            candidates = caught_up
        return candidates[next(self._turn) % len(candidates)]

    async def wait_replayed(self, node: Node, position: int, timeout_s: float) -> bool:
        """Whether ``node`` replays ``position`` within ``timeout_s``. Every read waiting on
        one server shares one poll of its replay position."""
        if node.replayed(position):
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        node._waiters.append((position, future))
        if node._poller is None or node._poller.done():
            node._poller = asyncio.create_task(self._poll_replay(node))
        self.waiting_reads += 1
        try:
            async with asyncio.timeout(timeout_s):
                await future
        except TimeoutError:
            return False
        finally:
            self.waiting_reads -= 1
        return True

    async def _poll_replay(self, node: Node) -> None:
        while node._waiters:
            position: int | None = None
            if node.pool is not None:
                with contextlib.suppress(Exception):
                    async with (
                        asyncio.timeout(self.timeout_ms / 1000),
                        node.pool.acquire() as conn,
                    ):
                        position = await conn.fetchval(REPLAY_SQL)
            reading = node.reading
            if (
                position is not None
                and reading is not None
                and (reading.position is None or position > reading.position)
            ):
                node.reading = msgspec.structs.replace(reading, position=position)
            waiting = []
            for wanted, future in node._waiters:
                if future.done():
                    continue
                if position is not None and position >= wanted:
                    future.set_result(None)
                else:
                    waiting.append((wanted, future))
            node._waiters = waiting
            if waiting:
                await asyncio.sleep(REPLAY_POLL_S)

    # ---- reporting ------------------------------------------------------------------------

    def reports(self) -> list[NodeReport]:
        now = time.monotonic()
        return [node.report(now) for node in self.nodes]

    def degradation(self) -> str | None:
        """Why the role is degraded (a server down, a replica behind), or ``None``."""
        reasons = []
        for node in self.nodes:
            if node is self.primary:
                continue
            if not node.up:
                reasons.append(f"{node.name} is down ({node.error})")
            elif node.is_standby and not node.serving:
                if node.lag_s is not None:
                    reasons.append(
                        f"replica {node.name} lags {node.lag_s:g} s "
                        f"(more than {self.max_lag_ms} ms): serves no reads"
                    )
                else:
                    reasons.append(f"replica {node.name} has not replayed anything yet")
            elif node.is_primary:
                reasons.append(f"{node.name} is also a primary (split brain?)")
        return "; ".join(reasons) or None
