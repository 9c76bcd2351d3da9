"""The Patroni harness (:mod:`tests.patroni`) gives a real cluster that fails over.

A two-node Patroni cluster with etcd on loopback bootstraps; a client given both hosts and
``target_session_attrs=read-write`` writes on the leader; after the leader's Patroni and
PostgreSQL are killed, the other node leads once the leader key's TTL ends, and a new
multi-host connection reaches it and writes, seeing what was written before; the killed node
comes back as a streaming replica. Afterwards nothing of the cluster runs and its folder is
gone. The times it took are printed (``pytest -s``) and kept as user properties.

Skipped, with one line, only where Patroni and etcd are missing and cannot be installed;
under CI (``CI`` set) as root with apt-get a missing one fails, since ``.ci/run`` installs
them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from tests.patroni import TTL_S, PatroniCluster, patroni_cluster, pid_alive, require_patroni

pytestmark = pytest.mark.timeout(300)


async def _write(cluster: PatroniCluster, value: str) -> tuple[str, list[str]]:
    """Insert ``value`` through a multi-host, read-write connection; the server's address
    and every value now in the table."""
    conn = await asyncpg.connect(**cluster.connect_kwargs())
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS notes (value text NOT NULL)")
        await conn.execute("INSERT INTO notes VALUES ($1)", value)
        port = await conn.fetchval("SELECT current_setting('port')::int")
        values = [r["value"] for r in await conn.fetch("SELECT value FROM notes ORDER BY 1")]
    finally:
        await conn.close()
    return f"127.0.0.1:{port}", values


async def _read_replica(cluster: PatroniCluster, value: str) -> bool:
    """Whether the replica already shows ``value`` (streamed, read-only)."""
    kwargs: dict[str, Any] = cluster.connect_kwargs(cluster.replica())
    kwargs["target_session_attrs"] = "standby"
    conn = await asyncpg.connect(**kwargs)
    try:
        found: bool = await conn.fetchval("SELECT $1 = ANY(array_agg(value)) FROM notes", value)
    except asyncpg.UndefinedTableError:
        return False  # the table itself is not replayed there yet
    finally:
        await conn.close()
    return found


async def test_cluster_bootstraps_writes_fails_over_and_cleans_up(
    record_property: Callable[[str, object], None],
) -> None:
    require_patroni()
    started = time.monotonic()
    with patroni_cluster() as cluster:
        bootstrap_s = time.monotonic() - started
        leader = cluster.leader()
        replica = cluster.replica()
        assert leader is not replica
        assert cluster.hosts == ",".join(f"127.0.0.1:{n.pg_port}" for n in cluster.nodes)

        # The multi-host connection lands on the leader, whichever place it has in the list.
        server, values = await _write(cluster, "before")
        assert server == leader.address
        assert values == ["before"]
        deadline = time.monotonic() + 30
        while not await _read_replica(cluster, "before"):
            assert time.monotonic() < deadline, "the replica never showed the leader's write"
            await asyncio.sleep(0.05)

        killed_at = time.monotonic()
        cluster.kill(leader)
        assert leader.patroni_pid is None
        assert leader.postmaster_pid() is None
        new_leader = await asyncio.to_thread(cluster.wait_leader, leader, 90.0)
        failover_s = time.monotonic() - killed_at
        assert new_leader is replica

        server, values = await _write(cluster, "after")
        assert server == replica.address
        assert values == ["after", "before"]  # nothing acknowledged before was lost

        # The old leader rejoins as a replica of the new one (pg_rewind).
        rejoin_started = time.monotonic()
        cluster.start(leader)
        assert await asyncio.to_thread(cluster.wait_healthy, 90.0) is replica
        rejoin_s = time.monotonic() - rejoin_started
        assert cluster.replica() is leader

        pids = [p for n in cluster.nodes for p in (n.patroni_pid, n.postmaster_pid()) if p]
        folder = cluster.folder

    assert len(pids) == 4
    assert not any(pid_alive(pid) for pid in pids), "a process of the cluster outlived it"
    assert not folder.exists()

    # Failover comes once the dead leader's key expires: about the TTL, never long after.
    assert failover_s < TTL_S + 20
    for name, value in (
        ("bootstrap_s", bootstrap_s),
        ("failover_s", failover_s),
        ("rejoin_s", rejoin_s),
    ):
        record_property(name, round(value, 1))
    print(  # noqa: T201 - the figures the harness is for, shown with -s
        f"\nPatroni: bootstrap {bootstrap_s:.1f} s, failover {failover_s:.1f} s "
        f"(ttl {TTL_S} s), old leader back as replica {rejoin_s:.1f} s"
    )
