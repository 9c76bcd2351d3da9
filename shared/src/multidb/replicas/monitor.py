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

When another server becomes the primary (a failover), ``on_primary_change`` is awaited:
the role's service drops its pooled connections to the old primary.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import asyncpg
import msgspec

from multidb.errors import describe
from multidb.replicas.lsn import format_lsn
from multidb.settings import Address, DatabaseSettings, address_text
from multidb.tls import Connect
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
       CASE WHEN pg_is_in_recovery()
            THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::int8 END AS received,
       CASE WHEN pg_is_in_recovery()
            THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
       END AS replay_age_s,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END AS paused,
       (SELECT numbackends FROM pg_stat_database WHERE datname = current_database())
         AS connections
"""
# A reading older than this many check intervals (plus the deadline) routes no reads: the
# monitor has stopped, or its loop is stuck.
STALE_AFTER_CHECKS = 6
# A replay poll that failed is tried again after this long, not at once.
REPLAY_RETRY_S = 0.1
REPLAY_SQL = "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8"

Listed = Literal["host", "replica"]


async def _keep_session(_: asyncpg.Connection) -> None:
    return None


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    """One successful probe of one server."""

    standby: bool
    position: int | None
    # A standby's: WAL received (replayed or not); seconds since its last replayed commit.
    received: int | None = None
    replay_age_s: float | None = None
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
        # Reads waiting for a replay position: their futures say True (reached) or False.
        self._waiters: list[tuple[int, asyncio.Future[bool]]] = []
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

    def give_up_waiting(self) -> None:
        for _, future in self._waiters:
            if not future.done():
                future.set_result(False)
        self._waiters = []

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
        on_primary_change: Callable[[], Awaitable[None]] | None = None,
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
        self._last_primary: Node | None = None
        self._primary_seen_at: float | None = None
        self._last_primary_position: int | None = None
        # The primary's positions and when each was seen, oldest first.
        self._times: list[float] = []
        self._positions: list[int] = []
        self._history_of: Node | None = None
        self._turn = itertools.count()
        self._task: asyncio.Task[None] | None = None
        # Reads waiting now for a replica to replay their min_lsn.
        self.waiting_reads = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def primary_first(self, connect: Connect) -> Connect:
        """``connect`` trying the primary the monitor found before the cluster's other
        hosts: asyncpg tries a host list in order under one timeout, so a dead machine
        first in ``HOST`` that swallows connection attempts would use it all up."""

        async def connecting(*args: Any, **kwargs: Any) -> asyncpg.Connection:
            primary = self.primary or self._last_primary
            hosts, ports = kwargs.get("host"), kwargs.get("port")
            if primary is not None and isinstance(hosts, list) and isinstance(ports, list):
                pairs = list(zip(hosts, ports, strict=True))
                if primary.address in pairs:
                    pairs.remove(primary.address)
                    pairs.insert(0, primary.address)
                    kwargs = {
                        **kwargs,
                        "host": [host for host, _ in pairs],
                        "port": [port for _, port in pairs],
                    }
            return await connect(*args, **kwargs)

        return connecting

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
                with contextlib.suppress(asyncio.CancelledError):
                    await node._poller
                node._poller = None
            node.give_up_waiting()
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
            await node.pool.expire_connections()
            return
        if node.error is not None:
            log.info("role %s: server %s answers again", self.role, node.name)
        node.error = None
        node.checked_at = time.monotonic()
        node.reading = Reading(
            standby=row["standby"],
            position=row["position"],
            received=row["received"],
            replay_age_s=row["replay_age_s"],
            paused=row["paused"],
            connections=row["connections"],
            at=node.checked_at,
        )

    async def check(self) -> None:
        """Probe every server at once, then work out the primary, the lag, who serves."""
        await asyncio.gather(*(self._probe(node) for node in self.nodes))
        now = time.monotonic()
        primary = next((node for node in self.nodes if node.is_primary), None)
        moved = primary is not self.primary and self._primary_changed(primary)
        if moved and self.on_primary_change is not None:
            await self.on_primary_change()
        if primary is not None and primary.position is not None:
            self._remember(now, primary, primary.position)
            self._primary_seen_at = now
        # What the standbys are measured against: now, while the primary answers. Without
        # it nothing new is written, so their lag stops where the primary was last seen;
        # unless a standby received more since, which means a primary writes somewhere.
        as_of = now
        if primary is None and self._primary_seen_at is not None:
            received = [n.reading.received or 0 for n in self.nodes if n.is_standby and n.reading]
            if max(received, default=0) <= (self._last_primary_position or 0):
                as_of = self._primary_seen_at
        for node in self.nodes:
            self._judge(node, as_of)

    def _primary_changed(self, primary: Node | None) -> bool:
        """Note ``primary``; whether another server took over (the connections move then:
        one missed probe of the same primary must not make every pool reconnect to it)."""
        self.primary = primary
        if primary is None:
            log.warning("role %s: no primary reachable", self.role)
            return False
        previous, self._last_primary = self._last_primary, primary
        if previous is None or previous is primary:
            return False  # the first primary found, or the same one back
        log.warning("role %s: the primary is now %s", self.role, primary.name)
        return True

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
        # Never the newest: on an idle primary it is what every standby is measured by.
        cut = min(bisect.bisect_left(self._times, now - HISTORY_S), len(self._times) - 1)
        if cut > 0:
            del self._times[:cut], self._positions[:cut]

    def _judge(self, node: Node, as_of: float) -> None:
        reading = node.reading
        if not node.is_standby or reading is None:
            node.serving = False
            node.lag_bytes = node.lag_s = None
            return
        reference = self._last_primary_position
        replayed = reading.position
        if replayed is None:
            node.serving = False  # it has replayed nothing yet
            node.lag_bytes = node.lag_s = None
            return
        if reference is None:
            # No primary seen yet: its own age of replay is an upper bound of its lag.
            node.lag_bytes = None
            node.lag_s = _rounded(reading.replay_age_s)
        else:
            node.lag_bytes = max(0, reference - replayed)
            node.lag_s = 0.0 if node.lag_bytes == 0 else self._lag_s(reading, replayed, as_of)
        node.serving = node.lag_s is not None and node.lag_s * 1000 <= self.max_lag_ms

    def _lag_s(self, reading: Reading, replayed: int, as_of: float) -> float | None:
        """For how long the primary has been past ``replayed``: since the first moment the
        monitor saw it there. Behind everything remembered (the monitor just started, a
        new primary, a primary idle past the history), at least since the oldest sample,
        and at most the standby's own time since its last replayed commit (the primary
        wrote nothing the standby lacks before that): the upper bound is taken, so a
        standby of unknown lag never serves reads it should not. ``None``: unknown."""
        if not self._times:
            return _rounded(reading.replay_age_s)
        first = bisect.bisect_right(self._positions, replayed)
        if first == len(self._times):
            return 0.0  # at or past every remembered position
        since = as_of - self._times[first]
        if first > 0:
            return round(max(0.0, since), 3)
        if reading.replay_age_s is None:
            return None
        return _rounded(max(since, reading.replay_age_s))

    def _fresh(self, node: Node, now: float) -> bool:
        limit = STALE_AFTER_CHECKS * self.interval_s + self.timeout_ms / 1000
        return node.checked_at is not None and now - node.checked_at <= limit

    async def still_up(self, node: Node) -> bool:
        """Whether ``node`` answers a probe now (one that fails marks it down)."""
        await self._probe(node)
        self._judge(node, time.monotonic())
        return node.up

    def failed(self, node: Node, error: str) -> None:
        """A statement found ``node`` gone: no reads go there until a probe says otherwise."""
        node.serving = False
        node.error = error
        node.checked_at = time.monotonic()

    # ---- choosing -------------------------------------------------------------------------

    def readers(self) -> list[Node]:
        now = time.monotonic()
        return [node for node in self.nodes if node.serving and self._fresh(node, now)]

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
        if node.pool is None:  # stopped
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        node._waiters.append((position, future))
        if node._poller is None or node._poller.done():
            node._poller = asyncio.create_task(self._poll_replay(node))
        self.waiting_reads += 1
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            return False
        finally:
            self.waiting_reads -= 1

    async def _poll_replay(self, node: Node) -> None:
        while node._waiters:
            position: int | None = None
            if node.pool is None:  # stopped
                node.give_up_waiting()
                return
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
                    future.set_result(True)
                else:
                    waiting.append((wanted, future))
            node._waiters = waiting
            if waiting:
                # A server that failed to answer is asked again later, not 200 times a second.
                await asyncio.sleep(REPLAY_POLL_S if position is not None else REPLAY_RETRY_S)

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


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(max(0.0, seconds), 3)
