"""Failover: a role whose primary goes away keeps reading from its replicas, answers writes
with a clear 503, and writes again within 5 s of a standby's promotion, without a restart.

Twice: with the embedded servers (``HOST`` lists the primary and its streaming replica; the
test crashes the primary and promotes the replica with ``pg_ctl promote``) and with a real
two-node Patroni cluster on etcd (the test kills the leader; Patroni promotes the other
node). The role's service and the writes and reads are real processes and real HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from multidb import migrations
from multidb.plugins import get_roles
from multidb.settings import load_settings
from tests.conftest import bearer
from tests.fleet import ProcessFleet
from tests.patroni import PatroniCluster, patroni_cluster, require_patroni
from tests.processes import until
from tests.replication import ReplicatedCluster, replicated_cluster

pytestmark = pytest.mark.timeout(300)

READ = bearer("db:execute")
WRITE = bearer("db:execute", "db:write")
BACK_WITHIN_S = 5.0
CREATE = "CREATE TABLE IF NOT EXISTS failover_notes (id serial PRIMARY KEY, note text)"


@dataclass
class Traffic:
    """Reads and writes sent all along, each answer kept with when it came."""

    reads: list[tuple[float, int, str]] = field(default_factory=list)
    writes: list[tuple[float, int, str]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def _loop(
        self, client: httpx.AsyncClient, kept: list[tuple[float, int, str]], **body: Any
    ) -> None:
        headers = READ if body.get("read_only", True) else WRITE
        while not self.done.is_set():
            answer = await client.post("/execute", json=body, headers=headers)
            said = answer.json().get("server" if answer.status_code == 200 else "detail", "")
            kept.append((time.monotonic(), answer.status_code, str(said)))
            if answer.status_code != 200:
                # Pace refused writes, as a client would: not a tight loop on two cores.
                await asyncio.sleep(0.05)

    def run(self, client: httpx.AsyncClient) -> list[asyncio.Task[None]]:
        read = {"query": "SELECT count(*) FROM failover_notes"}
        write = {"query": "INSERT INTO failover_notes (note) VALUES ('w')", "read_only": False}
        return [
            *(asyncio.create_task(self._loop(client, self.reads, **read)) for _ in range(3)),
            asyncio.create_task(self._loop(client, self.writes, **write)),
        ]

    def first_write_after(self, moment: float) -> float | None:
        return next((t for t, status, _ in self.writes if t > moment and status == 200), None)


async def _health(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.get("/health", headers=bearer("db:read"))
    body: dict[str, Any] = answer.json()
    body["http_status"] = answer.status_code
    return body


async def _ride_out(
    client: httpx.AsyncClient,
    crash: Callable[[], Awaitable[None]],
    promote: Callable[[], Awaitable[float]],
) -> tuple[Traffic, float, float, dict[str, Any]]:
    """Traffic through ``crash`` and ``promote`` (which returns when the new primary took
    over); what happened, when it took over, when the first write came back, and the
    health answer while there was no primary."""
    traffic = Traffic()
    tasks = traffic.run(client)
    try:

        async def flowing() -> bool:
            return len(traffic.writes) >= 5 and len(traffic.reads) >= 5

        await until(flowing, "reads and writes under way")
        await crash()
        crashed_at = time.monotonic()

        async def refused() -> bool:
            return any(t > crashed_at and status == 503 for t, status, _ in traffic.writes)

        await until(refused, "writes refused without a primary", 60)
        headless = await _health(client)
        promoted_at = await promote()

        async def back() -> float | None:
            return traffic.first_write_after(promoted_at)

        back_at = await until(back, "a write accepted by the new primary", 60)
        # Some more traffic on the new primary before stopping.
        settled = len(traffic.reads) + 20

        async def more() -> bool:
            return len(traffic.reads) >= settled

        await until(more, "reads after the failover")
    finally:
        traffic.done.set()
        await asyncio.gather(*tasks)
    return traffic, promoted_at, back_at, headless


def _check(traffic: Traffic, promoted_at: float, back_at: float, headless: dict[str, Any]) -> None:
    failed_reads = [answer for answer in traffic.reads if answer[1] != 200]
    assert not failed_reads, (
        f"{len(failed_reads)} of {len(traffic.reads)} reads failed: {failed_reads[:3]}"
    )
    statuses = {status for _, status, _ in traffic.writes}
    assert statuses <= {200, 503}, statuses
    refusals = [said for _, status, said in traffic.writes if status == 503]
    assert any("primary" in said for said in refusals), refusals[:3]
    assert back_at - promoted_at <= BACK_WITHIN_S, (
        f"writes back after {back_at - promoted_at:.1f} s"
    )
    assert headless["http_status"] == 503
    assert headless["status"] == "unhealthy"
    assert any(node["role"] == "standby" and node["serving_reads"] for node in headless["nodes"])


@pytest.fixture
def pair() -> Iterator[ReplicatedCluster]:
    """A primary and one streaming replica of their own (this test crashes the primary)."""
    with replicated_cluster(replicas=1, migrate=True) as cluster:
        yield cluster


async def test_a_promoted_replica_takes_the_writes_within_5_s(
    pair: ReplicatedCluster, tmp_path: Path
) -> None:
    cluster = pair
    replica = cluster.replicas[0]
    await cluster.sql(cluster.primary, CREATE, database="ocr_identity_db")
    fleet = ProcessFleet(cluster.env(cluster=True), tmp_path)
    with fleet.running_only("default"):
        async with httpx.AsyncClient(base_url=fleet.url("default"), timeout=30) as client:

            async def crash() -> None:
                await cluster.stop(cluster.primary)

            async def promote() -> float:
                await cluster.promote(replica)
                return time.monotonic()

            traffic, promoted_at, back_at, headless = await _ride_out(client, crash, promote)

            async def new_primary() -> dict[str, Any] | None:
                body = await _health(client)
                roles = {node["address"]: node["role"] for node in body["nodes"]}
                return body if roles[cluster.address(replica)] == "primary" else None

            after = await until(new_primary, "health showing the new primary")
    _check(traffic, promoted_at, back_at, headless)
    # The old primary is down, the new one answers: degraded, still 200.
    assert after["http_status"] == 200
    assert after["status"] == "degraded"
    new = next(node for node in after["nodes"] if node["role"] == "primary")
    assert new["address"] == cluster.address(replica)
    assert cluster.address(cluster.primary) in after["reason"]


async def test_multidb_follows_a_patroni_failover(tmp_path: Path) -> None:
    require_patroni()
    with patroni_cluster() as cluster:
        env = _patroni_env(cluster)
        await _prepare(cluster, env)
        fleet = ProcessFleet(env, tmp_path)
        with fleet.running_only("default"):
            async with httpx.AsyncClient(base_url=fleet.url("default"), timeout=30) as client:
                leader = cluster.leader()

                async def crash() -> None:
                    await asyncio.to_thread(cluster.kill, leader)

                async def promote() -> float:
                    await asyncio.to_thread(cluster.wait_leader, leader, 60)
                    return time.monotonic()

                traffic, promoted_at, back_at, headless = await _ride_out(client, crash, promote)
        _check(traffic, promoted_at, back_at, headless)
        print(  # noqa: T201 - the figure, with pytest -s
            f"Patroni failover: writes back {back_at - promoted_at:.2f} s after the new leader "
            f"took writes; {len(traffic.reads)} reads, none failed"
        )


def _patroni_env(cluster: PatroniCluster) -> dict[str, str]:
    return {
        "DB_HOST": cluster.hosts,
        "DB_USERNAME": cluster.user,
        "DB_PASSWORD": cluster.password,
        "DB_NAME": "ocr_identity_db",
        # The pgserver binaries have no TLS.
        "DB_SSLMODE": "disable",
        "MULTI_DB_DEFAULT_BACKUP_INTERVAL": "off",
        "MULTI_DB_DEFAULT_DRILL_INTERVAL": "off",
    }


async def _prepare(cluster: PatroniCluster, env: dict[str, str]) -> None:
    """The role's database on the leader, migrated (through the multi-host settings), with
    the test's table."""
    conn = await asyncpg.connect(**cluster.connect_kwargs())
    try:
        await conn.execute('CREATE DATABASE "ocr_identity_db"')
    finally:
        await conn.close()

    async def on_the_replica() -> bool:
        # asyncpg tries the next host only when a host cannot be reached, not when it
        # refuses the session: the replica must have the database before a list names it.
        kwargs = {
            **cluster.connect_kwargs(cluster.replica()),
            "database": "ocr_identity_db",
            "target_session_attrs": "any",
        }
        try:
            replica = await asyncpg.connect(**kwargs)
        except asyncpg.InvalidCatalogNameError:
            return False
        await replica.close()
        return True

    await until(on_the_replica, "the new database replayed on the replica")
    roles = get_roles()
    database = load_settings(env, roles).databases["default"]
    await asyncio.to_thread(migrations.upgrade, roles["default"], "head", database)
    conn = await database.connect()
    try:
        await conn.execute(CREATE)
    finally:
        await conn.close()
