"""Read replicas: routing, the lag bound, read-your-writes, a replica lost under load, and
health that shows every server. Real primaries and streaming replicas (pg_basebackup -R),
real lag (paused replay), the role service's real app; never the suite's shared cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from multidb.plugins import get_roles
from multidb.settings import Settings, load_settings
from multidb_devstack.embedded import EmbeddedPostgres
from tests.conftest import API_KEY, JWT_SECRET, bearer
from tests.fleet import ProcessFleet
from tests.processes import until
from tests.replication import ReplicatedCluster, replicated_cluster

DATABASE = "ocr_identity_db"
READ = bearer("db:execute")
WRITE = bearer("db:execute", "db:write")
Client = httpx.AsyncClient
WHERE = "SELECT current_setting('port')::int AS port, pg_is_in_recovery() AS standby"


@pytest.fixture(scope="module")
def cluster() -> Iterator[ReplicatedCluster]:
    with replicated_cluster(replicas=2, migrate=True) as made:
        asyncio.run(
            made.sql(
                made.primary,
                "CREATE TABLE replica_notes (id serial PRIMARY KEY, note text NOT NULL)",
                database=DATABASE,
            )
        )
        yield made


def _settings(cluster: ReplicatedCluster, **extra: str) -> Settings:
    env = {**cluster.env(), "API_KEYS": API_KEY, "JWT_SECRET": JWT_SECRET, **extra}
    return load_settings(env, get_roles())


def _fleet(cluster: ReplicatedCluster, logs: Path, **extra: str) -> ProcessFleet:
    return ProcessFleet(cluster.env(), logs, **extra)


@pytest.fixture(scope="module")
def fleet(
    cluster: ReplicatedCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessFleet]:
    """The default role's service and the gateway, real processes on the cluster."""
    logs = tmp_path_factory.mktemp("replica-fleet")
    made = _fleet(
        cluster, logs, DB_MAX_REPLICA_LAG_MS="400", MULTI_DB_READ_YOUR_WRITES_WAIT_MS="300"
    )
    try:
        made.start("default")
        made.start("gateway")
        yield made
    finally:
        made.close()


@pytest.fixture
async def default(fleet: ProcessFleet, cluster: ReplicatedCluster) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(base_url=fleet.url("default"), timeout=60) as client:
        await _until_serving(client, len(cluster.replicas))
        yield client


async def _health(client: Client) -> dict[str, Any]:
    answer = await client.get("/health", headers=bearer("db:read"))
    body: dict[str, Any] = answer.json()
    body["http_status"] = answer.status_code
    return body


async def _until_serving(client: Client, count: int) -> dict[str, Any]:
    async def serving() -> dict[str, Any] | None:
        body = await _health(client)
        readers = [node for node in body.get("nodes", []) if node["serving_reads"]]
        return body if len(readers) == count and body["status"] == "healthy" else None

    return await until(serving, f"{count} replica(s) serving reads")


async def _execute(
    client: Client, query: str, headers: dict[str, str] = READ, **body: Any
) -> dict[str, Any]:
    answer = await client.post("/execute", json={"query": query, **body}, headers=headers)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _port(server: EmbeddedPostgres) -> int:
    return server.state.port


async def test_reads_go_to_the_replicas_in_turns_and_writes_to_the_primary(
    cluster: ReplicatedCluster, default: Client
) -> None:
    replica_ports = {_port(replica) for replica in cluster.replicas}
    seen = set()
    for _ in range(6):
        answer = await _execute(default, WHERE)
        [[port, standby]] = answer["result"]
        assert standby is True
        assert answer["server"] == f"replica:127.0.0.1:{port}"
        seen.add(port)
    assert seen == replica_ports  # balanced: both replicas took reads

    written = await _execute(
        default,
        "INSERT INTO replica_notes (note) VALUES ('routed') RETURNING id",
        WRITE,
        read_only=False,
    )
    assert written["server"] == "primary"
    assert "/" in written["lsn"]

    for forced in (
        await _execute(default, WHERE, consistency="primary"),
        await _execute(default, WHERE, {**READ, "X-MultiDB-Consistency": "primary"}),
    ):
        assert forced["result"] == [[_port(cluster.primary), False]]
        assert forced["server"] == "primary"
        assert forced["routing"] == "consistency: primary"


async def test_bad_routing_input_is_a_clear_400(default: Client) -> None:
    for body, headers in (
        ({"min_lsn": "yesterday"}, READ),
        ({"consistency": "nearest"}, READ),
        ({}, {**READ, "X-MultiDB-Min-LSN": "0/zz"}),
        ({}, {**READ, "X-MultiDB-Consistency": "closest"}),
    ):
        answer = await default.post("/execute", json={"query": "SELECT 1", **body}, headers=headers)
        assert answer.status_code == 400, (body, headers, answer.text)
        said = answer.text.lower()  # the detail, or the errors naming the field
        assert any(word in said for word in ("min_lsn", "min-lsn", "consistency")), said


async def test_a_paused_replica_beyond_the_lag_bound_serves_no_reads(
    cluster: ReplicatedCluster, default: Client
) -> None:
    paused, other = cluster.replicas
    await cluster.pause_replay(paused)
    try:
        await _execute(
            default, "INSERT INTO replica_notes (note) VALUES ('lag')", WRITE, read_only=False
        )
        where = f"127.0.0.1:{_port(paused)}"

        async def excluded() -> dict[str, Any] | None:
            body = await _health(default)
            node = next(node for node in body["nodes"] if node["address"] == where)
            return body if not node["serving_reads"] else None

        body = await until(excluded, "the paused replica leaving the readers")
        assert body["http_status"] == 200
        assert body["status"] == "degraded"
        assert where in body["reason"]
        node = next(node for node in body["nodes"] if node["address"] == where)
        assert node["role"] == "standby"
        assert node["state"] == "paused"
        assert node["lag_bytes"] > 0
        assert node["lag_s"] > 0.4
        primary = next(node for node in body["nodes"] if node["role"] == "primary")
        assert primary["address"] == f"127.0.0.1:{_port(cluster.primary)}"

        for _ in range(6):  # only the other replica reads now
            answer = await _execute(default, WHERE)
            assert answer["result"] == [[_port(other), True]]

        metrics = (await default.get("/metrics", headers={"X-API-Key": API_KEY})).text
        assert f'multidb_replica_serving_reads{{role="default",server="{where}"}} 0.0' in metrics
        assert "multidb_replica_lag_seconds" in metrics
    finally:
        await cluster.resume_replay(paused)
    await _until_serving(default, 2)


async def _waiting_reads(client: Client) -> float:
    metrics = (await client.get("/metrics", headers={"X-API-Key": API_KEY})).text
    for line in metrics.splitlines():
        if line.startswith("multidb_reads_waiting_for_replay{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_read_your_writes_from_a_replica_once_replayed_else_the_primary(
    cluster: ReplicatedCluster, default: Client, tmp_path: Path
) -> None:
    for replica in cluster.replicas:
        await cluster.pause_replay(replica)
    try:
        written = await _execute(
            default,
            "INSERT INTO replica_notes (note) VALUES ('mine') RETURNING id",
            WRITE,
            read_only=False,
        )
        [[note_id]] = written["result"]
        token = written["lsn"]
        mine = f"SELECT note FROM replica_notes WHERE id = {int(note_id)}"
        # Without the token a replica answers (before its lag passes the 400 ms bound),
        # without the row: the token is what matters.
        stale = await _execute(default, mine)
        assert stale["server"].startswith("replica:")
        assert stale["result"] == []
        # No replica has replayed it: the primary answers, with the row; after waiting
        # 300 ms for a replica, or at once once both lag past the bound.
        behind = await _execute(default, mine, min_lsn=token)
        assert behind["result"] == [["mine"]]
        assert behind["server"] == "primary"
        if behind.get("waited_ms") is not None:
            assert token in behind["routing"]
            assert behind["waited_ms"] >= 250

        # A read waiting on the token is served by a replica as soon as it replays; here
        # through a gateway, which passes the header on.
        # The replicas are paused: a lag bound they stay within while this read waits.
        patient = _fleet(
            cluster,
            tmp_path,
            MULTI_DB_READ_YOUR_WRITES_WAIT_MS="20000",
            DB_MAX_REPLICA_LAG_MS="600000",
        )
        with patient.running_only("default", "gateway"):
            async with (
                httpx.AsyncClient(base_url=patient.gateway, timeout=60) as gateway,
                httpx.AsyncClient(base_url=patient.url("default"), timeout=60) as service,
            ):
                waiting = asyncio.create_task(
                    gateway.post(
                        "/database/default/execute",
                        json={"query": mine},
                        headers={**READ, "X-MultiDB-Min-LSN": token},
                    )
                )

                async def parked() -> bool:
                    return await _waiting_reads(service) >= 1

                await until(parked, "the read waiting for a replica to replay")
                for replica in cluster.replicas:
                    await cluster.resume_replay(replica)
                answer = await waiting
        assert answer.status_code == 200, answer.text
        served = answer.json()
        assert served["result"] == [["mine"]]
        assert served["server"].startswith("replica:")
        assert served["waited_ms"] > 0
    finally:
        for replica in cluster.replicas:
            await cluster.resume_replay(replica)
    # Once replayed, the token is served by a replica at once.
    await _until_serving(default, 2)
    caught_up = await _execute(default, mine, min_lsn=token)
    assert caught_up["result"] == [["mine"]]
    assert caught_up["server"].startswith("replica:")


async def test_a_replica_stopped_under_load_fails_no_read(
    cluster: ReplicatedCluster, default: Client
) -> None:
    victim = cluster.replicas[0]
    answers: list[int] = []
    servers: list[str] = []
    stopped = asyncio.Event()
    after_stop = 0

    async def reader() -> None:
        nonlocal after_stop
        while not stopped.is_set() or after_stop < 200:
            answer = await default.post(
                "/execute", json={"query": "SELECT count(*) FROM replica_notes"}, headers=READ
            )
            answers.append(answer.status_code)
            if answer.status_code == 200:
                servers.append(answer.json()["server"])
            if stopped.is_set():
                after_stop += 1

    readers = [asyncio.create_task(reader()) for _ in range(8)]

    async def under_way() -> bool:
        return len(answers) >= 100

    await until(under_way, "reads under way")
    await cluster.stop(victim)
    stopped.set()
    await asyncio.gather(*readers)
    try:
        assert set(answers) == {200}, f"{len(answers)} reads, {answers.count(200)} ok"
        body = await _health(default)
        node = next(n for n in body["nodes"] if n["address"] == f"127.0.0.1:{_port(victim)}")
        assert node["state"] == "down"
        assert body["status"] == "degraded"
        assert servers[-1] != f"replica:127.0.0.1:{_port(victim)}"
    finally:
        await cluster.start(victim)
        await cluster.wait_streaming(victim)
    await _until_serving(default, 2)


async def test_python_api_read_sessions_go_to_a_replica_with_the_writes_token(
    cluster: ReplicatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import text

    import multidb
    from multidb import engines, multi_database_utils, router
    from multidb import settings as settings_module
    from multidb.replicas import write_position

    for name, value in cluster.env().items():
        monkeypatch.setenv(name, value)

    def reset() -> None:
        settings_module.get_settings.cache_clear()
        router.get_database_router.cache_clear()
        multi_database_utils.get_multi_database_utils.cache_clear()
        engines._registry = None

    reset()
    try:
        async for db in multidb.get_db("default"):
            await db.execute(text("INSERT INTO replica_notes (note) VALUES ('python')"))
            await db.commit()
            token = await write_position(db)
        async for db in multidb.get_db("default", readonly=True, min_lsn=token):
            assert await db.scalar(text("SELECT pg_is_in_recovery()")) is True
            count = "SELECT count(*) FROM replica_notes WHERE note = 'python'"
            assert await db.scalar(text(count)) == 1
        async for db in multidb.get_db("default", readonly=True):
            with pytest.raises(Exception, match="read-only"):
                await db.execute(text("INSERT INTO replica_notes (note) VALUES ('no')"))
    finally:
        await multidb.dispose_engines()
        reset()


async def test_health_lists_every_server_and_stats_per_server(
    cluster: ReplicatedCluster, default: Client
) -> None:
    body = await _health(default)
    assert body["status"] == "healthy"
    roles = sorted(node["role"] for node in body["nodes"])
    assert roles == ["primary", "standby", "standby"]
    for node in body["nodes"]:
        assert node["state"] == "up"
        if node["role"] == "standby":
            assert node["serving_reads"] is True
            # Caught up on an idle primary: no lag, however long since the last write.
            if node["lag_bytes"] == 0:
                assert node["lag_s"] == 0
    stats = (await default.get("/stats", headers=bearer("db:read"))).json()
    assert {node["address"] for node in stats["nodes"]} == {
        node["address"] for node in body["nodes"]
    }
    assert all(node["connections"] >= 1 for node in stats["nodes"])


async def test_openapi_documents_degraded_and_the_nodes(default: Client) -> None:
    document = (await default.get("/schema/openapi.json")).text
    for word in ("degraded", "serving_reads", "lag_s", "min_lsn", "X-MultiDB-Min-LSN"):
        assert word in document, word
