"""A primary and streaming replicas of its own, for the read-replica tests.

Never the suite's shared cluster: a test may pause, stop, crash or promote any of these
servers. ``replicated_cluster()`` makes a primary in ``.data/repl-<token>`` (under the
project, not pytest's ``tmp_path``: see ``spare_cluster`` in ``tests/conftest.py``) with a
database for every installed role, and replicas in folders inside it, and returns once each
replica streams; at the end every server stops and the folder goes, failure or not.

A module's tests share one (each replica is a ``pg_basebackup``)::

    @pytest.fixture(scope="module")
    def cluster() -> Iterator[ReplicatedCluster]:
        with replicated_cluster(replicas=1) as made:
            yield made

The waits poll the servers' real state until a deadline; none sleeps for a race to pass.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import secrets
import shutil
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from multidb import migrations
from multidb.plugins import get_roles
from multidb.roles import RoleSpec
from multidb.settings import load_settings, variable_name
from multidb_devstack.embedded import EmbeddedPostgres, wait_streaming
from tests.conftest import ROOT
from tests.processes import until

T = TypeVar("T")

WAIT_S = 30.0


def _blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end from synchronous code, a running event loop or not (an
    async test entering the context manager): then in a thread with a loop of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@dataclass
class ReplicatedCluster:
    """A primary and its streaming replicas (:func:`replicated_cluster` makes one).

    Servers are the :class:`EmbeddedPostgres` objects in :attr:`primary` and
    :attr:`replicas`; each is reached on ``127.0.0.1:<its port>`` with TLS (verify-full
    against the primary's CA, which every replica shares) and the same password. The
    attributes keep naming the servers as they were made: after :meth:`promote` the old
    primary is still :attr:`primary`."""

    primary: EmbeddedPostgres
    replicas: list[EmbeddedPostgres] = field(default_factory=list)

    @property
    def servers(self) -> list[EmbeddedPostgres]:
        return [self.primary, *self.replicas]

    def address(self, server: EmbeddedPostgres) -> str:
        """``127.0.0.1:<port>``."""
        return server.address

    def env(
        self, roles: Mapping[str, RoleSpec] | None = None, *, cluster: bool = False
    ) -> dict[str, str]:
        """The variables that point every role (of ``roles``; every installed one by
        default) at this cluster, as :meth:`EmbeddedPostgres.environment` does, with
        ``<prefix>REPLICAS`` listing the replicas; with ``cluster``, ``<prefix>HOST`` lists
        the primary and the replicas instead (the primary is found by asking each), and no
        ``<prefix>REPLICAS``. Scheduled backups, drills and archive runs are off, as in the
        suite's ``database_env``; backups would go to ``<primary's folder>/backups``."""
        roles = get_roles() if roles is None else roles
        env = self.primary.environment(roles)
        replicas = ",".join(self.address(server) for server in self.replicas)
        everyone = ",".join(self.address(server) for server in self.servers)
        for spec in roles.values():
            if cluster:
                env[variable_name(spec, "host")] = everyone
            elif replicas:
                env[variable_name(spec, "replicas")] = replicas
            env[f"MULTI_DB_{spec.name.upper()}_BACKUP_INTERVAL"] = "off"
            env[f"MULTI_DB_{spec.name.upper()}_DRILL_INTERVAL"] = "off"
        env["MULTI_DB_ARCHIVE_INTERVAL"] = "off"
        env["MULTI_DB_BACKUP_DIR"] = str(self.primary.folder / "backups")
        return env

    # ---- SQL as the superuser ------------------------------------------------------------

    async def sql(
        self, server: EmbeddedPostgres, statement: str, *args: Any, database: str = "postgres"
    ) -> list[asyncpg.Record]:
        """The rows of one ``statement`` run on ``server`` (its own connection)."""
        conn = await server.admin_settings(database).connect(timeout=10)
        try:
            return list(await conn.fetch(statement, *args))
        finally:
            await conn.close()

    async def value(
        self, server: EmbeddedPostgres, statement: str, *args: Any, database: str = "postgres"
    ) -> Any:
        """The first column of the first row of ``statement`` on ``server`` (None: no row)."""
        rows = await self.sql(server, statement, *args, database=database)
        return rows[0][0] if rows else None

    async def lsn(self, server: EmbeddedPostgres | None = None) -> str:
        """Where ``server``'s WAL ends now (``pg_current_wal_lsn()``; the primary's by default)."""
        found: str = await self.value(server or self.primary, "SELECT pg_current_wal_lsn()::text")
        return found

    # ---- replication -----------------------------------------------------------------------

    async def pause_replay(self, replica: EmbeddedPostgres) -> None:
        """Stop ``replica`` replaying WAL (it keeps receiving it); returns once paused."""
        await self.sql(replica, "SELECT pg_wal_replay_pause()")
        await self._replay_state(replica, "paused")

    async def resume_replay(self, replica: EmbeddedPostgres) -> None:
        """Let ``replica`` replay WAL again; returns once it does."""
        await self.sql(replica, "SELECT pg_wal_replay_resume()")
        await self._replay_state(replica, "not paused")

    async def _replay_state(self, replica: EmbeddedPostgres, wanted: str) -> None:
        async def reached() -> bool:
            state = await self.value(replica, "SELECT pg_get_wal_replay_pause_state()")
            return bool(state == wanted)

        await until(reached, f"replay {wanted} on {self.address(replica)}")

    async def wait_replayed(
        self, replica: EmbeddedPostgres, lsn: str, timeout_s: float = WAIT_S
    ) -> None:
        """Return once ``replica`` has replayed the WAL up to ``lsn`` (``'0/3000148'``)."""

        async def replayed() -> bool:
            done = await self.value(
                replica, "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn
            )
            return bool(done)

        await until(replayed, f"{self.address(replica)} replaying up to {lsn}", timeout_s)

    async def wait_streaming(self, *replicas: EmbeddedPostgres) -> None:
        """Return once each of ``replicas`` (every one by default) streams from the primary."""
        await wait_streaming(self.primary, replicas or self.replicas, WAIT_S)

    def add_replica(self) -> EmbeddedPostgres:
        """One more replica of the primary, started and streaming (stopped and removed with
        the cluster)."""
        replica = self.primary.create_replica(
            self.primary.folder / f"replica-{len(self.replicas) + 1}"
        )
        self.replicas.append(replica)
        replica.start()
        _blocking(wait_streaming(self.primary, [replica], WAIT_S))
        return replica

    # ---- servers coming and going ----------------------------------------------------------

    async def promote(self, replica: EmbeddedPostgres) -> None:
        """Make ``replica`` a primary; returns once it takes writes."""
        await asyncio.to_thread(replica.promote)

    async def stop(self, server: EmbeddedPostgres) -> None:
        """Stop ``server`` at once, as a crash would (no checkpoint; its port refuses)."""
        await asyncio.to_thread(server.stop, mode="immediate")

    async def start(self, server: EmbeddedPostgres) -> None:
        """Start ``server`` again (a replica goes on from where it was, once it connects)."""
        await asyncio.to_thread(server.start)


@contextlib.contextmanager
def replicated_cluster(replicas: int = 1, *, migrate: bool = False) -> Iterator[ReplicatedCluster]:
    """A dedicated primary with a database for every installed role (migrated to head
    with ``migrate``) and ``replicas`` streaming replicas of it, each streaming when this
    yields; all stopped and removed at the end."""
    folder = ROOT / ".data" / f"repl-{secrets.token_hex(4)}"
    cluster = ReplicatedCluster(primary=EmbeddedPostgres(folder))
    with contextlib.ExitStack() as cleanup:
        # Run last to first: the replicas stop, then the primary, then the folder goes.
        cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
        cleanup.callback(lambda: _stop_all(cluster.servers))  # the replicas added since too
        primary = cluster.primary
        primary.start()
        roles = get_roles()
        _blocking(primary.create_databases(spec.database for spec in roles.values()))
        if migrate:
            # Before the replicas exist: they start from a copy that has the tables.
            settings = load_settings(primary.environment(roles), roles)
            for name, spec in roles.items():
                migrations.upgrade(spec, "head", settings.databases[name])
        for _ in range(replicas):
            cluster.add_replica()
        yield cluster


def _stop_all(servers: Iterable[EmbeddedPostgres]) -> None:
    # The last first; one that fails to stop does not keep the others up.
    with contextlib.ExitStack() as stopping:
        for server in servers:
            stopping.callback(server.stop, mode="immediate")
