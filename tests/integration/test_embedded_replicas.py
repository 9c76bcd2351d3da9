"""Streaming replicas of the embedded PostgreSQL: made with pg_basebackup, reached with TLS
on ports of their own, paused, promoted, remade; and ``make run``'s
``MULTI_DB_EMBEDDED_REPLICAS``. One dedicated cluster for the module (tests/replication.py),
never the suite's."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from multidb.plugins import get_roles
from multidb.settings import SettingsError, load_settings, variable_name
from multidb_devstack import stack
from multidb_devstack.embedded import EmbeddedPostgres, wait_streaming
from tests.processes import until
from tests.replication import ReplicatedCluster, replicated_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[ReplicatedCluster]:
    with replicated_cluster(replicas=1) as made:
        yield made


def _table() -> str:
    return f"replicated_{secrets.token_hex(4)}"


async def test_a_row_written_on_the_primary_is_read_on_the_replica(
    cluster: ReplicatedCluster,
) -> None:
    replica = cluster.replicas[0]
    assert cluster.address(replica) != cluster.address(cluster.primary)
    table = _table()
    await cluster.sql(cluster.primary, f"CREATE TABLE {table} (note text)")
    await cluster.sql(cluster.primary, f"INSERT INTO {table} VALUES ($1)", "from the primary")
    await cluster.wait_replayed(replica, await cluster.lsn())
    assert await cluster.value(replica, f"SELECT note FROM {table}") == "from the primary"
    assert await cluster.value(replica, "SELECT pg_is_in_recovery()") is True
    # Reached like the primary (sql() connects with verify-full against the primary's CA):
    # its certificate, copied with the data, still chains to the CA copied beside it.
    assert replica.database_settings(get_roles()["default"]).sslmode == "verify-full"
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await cluster.sql(replica, f"INSERT INTO {table} VALUES ('on the replica')")


async def test_a_paused_replica_holds_a_write_back_until_it_resumes(
    cluster: ReplicatedCluster,
) -> None:
    replica = cluster.replicas[0]
    table = _table()
    await cluster.sql(cluster.primary, f"CREATE TABLE {table} (note text)")
    await cluster.wait_replayed(replica, await cluster.lsn())
    await cluster.pause_replay(replica)
    try:
        await cluster.sql(cluster.primary, f"INSERT INTO {table} VALUES ('held back')")
        written = await cluster.lsn()

        async def received() -> bool:
            # The WAL of the write arrived: only its replay waits.
            done = await cluster.value(
                replica, "SELECT pg_last_wal_receive_lsn() >= $1::text::pg_lsn", written
            )
            return bool(done)

        await until(received, "the paused replica receiving the write's WAL")
        assert await cluster.value(replica, f"SELECT count(*) FROM {table}") == 0
        behind = await cluster.value(
            replica, "SELECT pg_last_wal_replay_lsn() < $1::text::pg_lsn", written
        )
        assert behind is True
    finally:
        await cluster.resume_replay(replica)
    await cluster.wait_replayed(replica, written)
    assert await cluster.value(replica, f"SELECT note FROM {table}") == "held back"


async def test_a_promoted_replica_takes_writes_and_is_remade_a_replica_later(
    cluster: ReplicatedCluster,
) -> None:
    """Its own replica (the module's stays one); made again in its folder it follows the
    primary afresh, on the same port, and what was written on it alone is gone."""
    primary = cluster.primary
    replica = primary.create_replica(primary.folder / f"promoted-{secrets.token_hex(2)}")
    try:
        replica.start()
        await wait_streaming(primary, [replica])
        port = replica.state.port
        await cluster.promote(replica)
        assert await cluster.value(replica, "SELECT pg_is_in_recovery()") is False
        table = _table()
        await cluster.sql(replica, f"CREATE TABLE {table} (note text)")
        await cluster.sql(replica, f"INSERT INTO {table} VALUES ('on the promoted one')")
        assert await cluster.value(replica, f"SELECT note FROM {table}") == "on the promoted one"
        assert not replica.is_standby()

        await cluster.stop(replica)
        again = primary.create_replica(replica.folder)
        assert again.is_standby()
        assert again.state.port == port
        again.start()
        await wait_streaming(primary, [again])
        assert await cluster.value(again, "SELECT pg_is_in_recovery()") is True
        assert await cluster.value(again, "SELECT to_regclass($1) IS NULL", table) is True
    finally:
        replica.stop(mode="immediate")
        shutil.rmtree(replica.folder, ignore_errors=True)


async def test_a_replica_left_behind_too_long_is_made_again(cluster: ReplicatedCluster) -> None:
    """Stopped while the primary went on past the WAL it would ask for (no slot keeps it),
    a replica could never catch up: made again in its folder, it streams."""
    primary = cluster.primary
    replica = primary.create_replica(primary.folder / f"behind-{secrets.token_hex(2)}")
    try:
        replica.start()
        await wait_streaming(primary, [replica])
        replica.stop()
        # A mark in the copy (not an inode number: a new copy may get the freed one).
        mark = replica.pgdata / "multidb-test-mark"
        mark.write_text("the first copy")
        table = _table()
        await cluster.sql(primary, f"CREATE TABLE {table} (round int)")
        for round_ in range(3):
            # Each round ends the WAL segment and checkpoints: the primary keeps the WAL
            # from its checkpoint on, so the segments the replica stopped in go.
            await cluster.sql(primary, f"INSERT INTO {table} VALUES ($1)", round_)
            await cluster.sql(primary, "SELECT pg_switch_wal()")
            await cluster.sql(primary, "CHECKPOINT")
        again = primary.create_replica(replica.folder)
        assert not mark.exists()  # copied again
        again.start()
        await wait_streaming(primary, [again])
        await cluster.wait_replayed(again, await cluster.lsn())
        assert await cluster.value(again, f"SELECT count(*) FROM {table}") == 3
    finally:
        replica.stop(mode="immediate")
        shutil.rmtree(replica.folder, ignore_errors=True)


def test_a_replica_that_can_follow_is_reused_as_it_is(cluster: ReplicatedCluster) -> None:
    replica = cluster.replicas[0]
    mark = replica.pgdata / "multidb-test-mark"
    mark.write_text("the first copy")
    try:
        same = cluster.primary.create_replica(replica.folder)
        assert mark.exists()  # not copied again
    finally:
        mark.unlink(missing_ok=True)
    assert same.state == replica.state
    assert same.is_running()


def test_a_replica_keeps_its_secrets_private(cluster: ReplicatedCluster) -> None:
    """pg_basebackup -R writes the primary's password in the replica's configuration (its
    primary_conninfo): a file of the server's user alone, as the CA's key is."""
    replica = cluster.replicas[0]
    for path in (replica.pgdata / "postgresql.auto.conf", replica.ca_key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(replica.pgdata.stat().st_mode) == 0o700


def test_the_environment_names_the_replicas_or_every_host(cluster: ReplicatedCluster) -> None:
    roles = get_roles()
    replica = cluster.address(cluster.replicas[0])
    primary = cluster.address(cluster.primary)
    env = cluster.env(roles)
    cluster_env = cluster.env(roles, cluster=True)
    for spec in roles.values():
        assert env[variable_name(spec, "host")] == "127.0.0.1"
        assert env[variable_name(spec, "port")] == primary.rpartition(":")[2]
        assert env[variable_name(spec, "replicas")] == replica
        assert cluster_env[variable_name(spec, "host")] == f"{primary},{replica}"
        assert variable_name(spec, "replicas") not in cluster_env
    assert set(load_settings(env, roles).databases) == set(roles)


# ---- make run: MULTI_DB_EMBEDDED_REPLICAS ---------------------------------------------------


@pytest.mark.parametrize(("raw", "count"), [("", 0), ("0", 0), ("1", 1), (" 3 ", 3)])
def test_the_replica_count_is_read(raw: str, count: int) -> None:
    assert stack.embedded_replica_count({stack.REPLICAS_VARIABLE: raw}) == count
    assert stack.embedded_replica_count({}) == 0


@pytest.mark.parametrize("raw", ["4", "-1", "one", "1.5", "²"])
def test_a_bad_replica_count_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError) as refused:
        stack.embedded_replica_count({stack.REPLICAS_VARIABLE: raw})
    assert str(refused.value) == (
        f"MULTI_DB_EMBEDDED_REPLICAS: must be a whole number from 0 to 3 (got {raw!r})"
    )


def test_every_role_gets_the_replicas() -> None:
    roles = get_roles()
    env = stack.replicas_environment(roles, ["127.0.0.1:5001", "127.0.0.1:5002"])
    assert env == {
        variable_name(spec, "replicas"): "127.0.0.1:5001,127.0.0.1:5002" for spec in roles.values()
    }
    assert env["DB_REPLICAS"] == "127.0.0.1:5001,127.0.0.1:5002"
    assert "MULTI_DB_ANALYTICS_REPLICAS" in env
    assert stack.replicas_environment(roles, []) == {}


def test_make_run_refuses_a_bad_count_in_one_line_before_starting_anything(
    tmp_path: Path,
) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DB_", "MULTI_DB_"))  # no servers named: the embedded path
    }
    env.update(MULTI_DB_ENV_FILE=os.devnull, MULTI_DB_EMBEDDED_REPLICAS="9")
    done = subprocess.run(
        [sys.executable, "-m", "multidb.cli", "up"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        "configuration error: MULTI_DB_EMBEDDED_REPLICAS: must be a whole number from 0 to 3 "
        "(got '9')"
    ]
    assert not (tmp_path / ".data" / "pg").exists()
    assert not (tmp_path / ".data" / "stack.pid").exists()


async def test_the_stack_starts_its_replicas_and_reuses_them_next_time(
    cluster: ReplicatedCluster,
) -> None:
    """``start_replicas`` as ``make run`` calls it, on the module's primary, twice: the
    second run finds the replica it made and starts it again, on the same port."""
    folder = cluster.primary.folder / "stack"
    said: list[str] = []
    first = await _start_replicas(cluster.primary, folder, said)
    try:
        assert [r.folder for r in first] == [(folder / "pg-replica-1").resolve()]
        replica = first[0]
        assert said == [
            f"started replica 1 of the embedded PostgreSQL in {folder / 'pg-replica-1'}: "
            f"{replica.address}"
        ]
        assert (await cluster.primary.standbys())[replica.standby_name] == "streaming"
        made = (replica.pgdata / "PG_VERSION").stat().st_ino
    finally:
        stack._stop_all(first)
    assert not first[0].is_running()
    second = await _start_replicas(cluster.primary, folder, said)
    try:
        assert second[0].address == replica.address
        assert (second[0].pgdata / "PG_VERSION").stat().st_ino == made
        assert await cluster.value(second[0], "SELECT pg_is_in_recovery()") is True
    finally:
        stack._stop_all(second)


async def _start_replicas(
    primary: EmbeddedPostgres, folder: Path, said: list[str]
) -> list[EmbeddedPostgres]:
    # start_replicas runs its own event loop (asyncio.run), as make run has none: a thread.
    return await asyncio.to_thread(stack.start_replicas, primary, folder, 1, said.append)
