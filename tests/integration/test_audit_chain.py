"""The tamper-evident audit trail on real PostgreSQL, with ``multidb audit verify`` as a process.

Records reach a logging service process the way the gateway sends them (its outbox and its
own credential), in a logging database of the test's own; then rows are edited, deleted and
forged with plain SQL, as someone with write access to the table would, and the ``multidb``
command must find each one.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest

from multidb import migrations
from multidb.audit_records import AccessRecord
from multidb.roles import RoleSpec
from multidb.settings import DatabaseSettings, Settings, variable_name
from multidb_devstack.embedded import free_port
from multidb_gateway.audit import AuditTrail
from multidb_gateway.credentials import SUBJECT, GatewayCredential
from multidb_logging import verify
from multidb_logging.chain import GENESIS, link_hash
from multidb_logging.store import store_records
from tests.conftest import API_KEY, JWT_SECRET
from tests.integration.test_audit import LoggingService, record

MULTIDB = str(Path(sys.executable).parent / "multidb")


async def _as_admin(database: DatabaseSettings, statement: str) -> None:
    conn = await database.connect()
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def fresh_logging(settings: Settings) -> Iterator[DatabaseSettings]:
    """A logging database of the test's own, empty, not migrated; dropped afterwards."""
    shared = settings.databases["logging"]
    name = f"audit_chain_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_as_admin(shared, f'CREATE DATABASE "{name}"'))
    except asyncpg.InsufficientPrivilegeError:
        pytest.skip("the logging login may not create databases")
    yield msgspec.structs.replace(shared, database=name)
    asyncio.run(_as_admin(shared, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
def chained(fresh_logging: DatabaseSettings, roles: dict[str, RoleSpec]) -> DatabaseSettings:
    migrations.upgrade(roles["logging"], "head", fresh_logging)
    return fresh_logging


def environment(
    database_env: dict[str, str], roles: dict[str, RoleSpec], database: DatabaseSettings
) -> dict[str, str]:
    """Every process of the test: the suite's servers, the test's own logging database."""
    return {
        **os.environ,
        **database_env,
        variable_name(roles["logging"], "database"): database.database,
        "API_KEYS": API_KEY,
        "JWT_SECRET": JWT_SECRET,
        "MULTI_DB_ENV_FILE": os.devnull,
    }


def audit_verify(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``multidb audit verify`` as an operator runs it (the installed console script)."""
    return subprocess.run(
        [MULTIDB, "audit", "verify", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def deliver(url: str, credential: GatewayCredential, records: list[AccessRecord]) -> None:
    """What the gateway does with its access records: its outbox, its own credential."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def send(body: bytes) -> None:
            headers = {**credential.headers(), "content-type": "application/json"}
            async with session.post(f"{url}/audit/access", data=body, headers=headers) as answer:
                answer.raise_for_status()

        trail = AuditTrail(send, batch_size=7, flush_interval_s=0.05)
        await trail.start()
        for rec in records:
            trail.record(rec)
        await trail.stop()
    status = trail.status()
    assert (status.sent, status.dropped, status.failures) == (len(records), 0, 0)


async def fetch(database: DatabaseSettings, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await database.connect()
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows
    finally:
        await conn.close()


TAMPER_EDIT = """
UPDATE access_logs SET principal = 'api-key:someone-else'
WHERE chain_writer = $1 AND chain_seq = 5 RETURNING id, event_id
"""
TAMPER_DELETE = """
DELETE FROM access_logs WHERE chain_writer = $1 AND chain_seq = 12 RETURNING id, event_id
"""
# A forged record: a copy of a real one under a new event id, numbered after the chain's
# last record and linked to it, with a hash that looks like one.
TAMPER_INSERT = """
INSERT INTO access_logs (
    event_id, created_at, request_id, principal, auth_method, method, path, target_role,
    query_fingerprint, query_preview, read_only, outcome, status_code, row_count,
    duration_ms, error, client_ip, chain_writer, chain_seq, prev_hash, row_hash
)
SELECT $2::text, created_at, request_id, principal, auth_method, method, path, target_role,
       query_fingerprint, query_preview, read_only, outcome, status_code, row_count,
       duration_ms, error, client_ip, chain_writer, chain_seq + 1, row_hash,
       encode(sha256(convert_to($2::text, 'UTF8')), 'hex')
FROM access_logs WHERE chain_writer = $1 ORDER BY chain_seq DESC LIMIT 1
RETURNING id, event_id
"""


def test_verify_finds_an_edited_a_deleted_and_an_inserted_record(
    chained: DatabaseSettings,
    database_env: dict[str, str],
    roles: dict[str, RoleSpec],
    settings: Settings,
    tmp_path: Path,
) -> None:
    env = environment(database_env, roles, chained)
    service = LoggingService(env)
    service.start()
    try:
        records = [record(row_count=i) for i in range(30)]
        asyncio.run(deliver(service.url, GatewayCredential(settings), records))
    finally:
        service.stop()

    intact = audit_verify(env, tmp_path)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert f'chain "{SUBJECT}": 30 records, intact' in intact.stdout
    assert intact.stdout.rstrip().endswith("intact: 1 chain(s), 30 records")
    head = next(line for line in intact.stdout.splitlines() if line.startswith(SUBJECT))
    assert re.fullmatch(rf"{SUBJECT}\s+30\s+[0-9a-f]{{64}}", head), head

    (edited,) = asyncio.run(fetch(chained, TAMPER_EDIT, SUBJECT))
    (deleted,) = asyncio.run(fetch(chained, TAMPER_DELETE, SUBJECT))
    (forged,) = asyncio.run(fetch(chained, TAMPER_INSERT, SUBJECT, uuid.uuid4().hex))

    # The head printed before, passed back: still there, so it adds no finding.
    last_hash = head.split()[-1]
    tampered = audit_verify(env, tmp_path, "--anchor", f"{SUBJECT}:30:{last_hash}")
    # The closing note quotes this output: keep it on the test's record.
    sys.stdout.write(f"\n$ multidb audit verify --anchor ...\n{tampered.stdout}")
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert tampered.stderr == ""
    lines = tampered.stdout.splitlines()
    assert f'chain "{SUBJECT}": 30 records, TAMPERED' in lines
    assert (
        f"  edited    seq 5, id {edited['id']}, event {edited['event_id']}: "
        "its columns no longer match its hash"
    ) in lines
    before, after = deleted["id"] - 1, deleted["id"] + 1  # ids follow seq in a fresh table
    assert (
        f"  deleted   seq 12 (1 record), between id {before} (seq 11) and id {after} (seq 13)"
    ) in lines
    assert (
        f"  inserted  seq 31, id {forged['id']}, event {forged['event_id']}: "
        "beyond the chain's recorded head (seq 30)"
    ) in lines
    assert lines[-1] == "TAMPERED: 3 finding(s) in 1 of 1 chain(s)"


def test_concurrent_batches_of_one_writer_never_fork_and_retries_add_no_link(
    chained: DatabaseSettings,
    database_env: dict[str, str],
    roles: dict[str, RoleSpec],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = LoggingService(environment(database_env, roles, chained))
    service.start()
    batches = [[record(row_count=i) for i in range(10)] for _ in range(16)]
    headers = {**GatewayCredential(settings).headers(), "content-type": "application/json"}

    async def post_all() -> list[dict[str, int]]:
        url = f"{service.url}/audit/access"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

            async def post(batch: list[AccessRecord]) -> dict[str, int]:
                body = msgspec.json.encode(batch)
                async with session.post(url, data=body, headers=headers) as answer:
                    assert answer.status == 200, await answer.text()
                    receipt: dict[str, int] = await answer.json()
                    return receipt

            # Every batch twice at once: a retry racing its first attempt.
            answers = await asyncio.gather(*(post(batch) for batch in batches * 2))
            answers.append(await post(batches[0]))  # and once more, long after
            return answers

    try:
        receipts = asyncio.run(post_all())
    finally:
        service.stop()

    assert sum(receipt["inserted"] for receipt in receipts) == 160
    rows = asyncio.run(
        fetch(
            chained,
            "SELECT chain_writer, chain_seq, prev_hash, row_hash FROM access_logs ORDER BY id",
        )
    )
    assert len(rows) == 160
    assert {row["chain_writer"] for row in rows} == {SUBJECT}
    by_seq = sorted(rows, key=lambda row: row["chain_seq"])
    assert [row["chain_seq"] for row in by_seq] == list(range(1, 161))
    assert [row["prev_hash"] for row in by_seq] == [
        GENESIS,
        *(row["row_hash"] for row in by_seq[:-1]),
    ]
    (head,) = asyncio.run(fetch(chained, "SELECT * FROM access_log_chains WHERE writer <> ''"))
    assert (head["writer"], head["last_seq"], head["last_hash"]) == (
        SUBJECT,
        160,
        by_seq[-1]["row_hash"],
    )
    # The verifier reads in rounds of FETCH_ROWS: several rounds here, one chain still.
    monkeypatch.setattr(verify, "FETCH_ROWS", 7)
    monkeypatch.setattr(verify, "PROGRESS_EVERY", 50)
    heard: list[int] = []
    report = asyncio.run(_walk(chained, heard.append))
    assert heard == [50, 100, 150]
    assert not report.tampered
    assert [(chain.writer, chain.records) for chain in report.chains] == [(SUBJECT, 160)]


async def _walk(database: DatabaseSettings, progress: Any = None) -> Any:
    conn = await database.connect()
    try:
        return await verify.walk(conn, progress=progress)
    finally:
        await conn.close()


async def _store(database: DatabaseSettings, writer: str, records: list[AccessRecord]) -> int:
    conn = await database.connect()
    try:
        return await store_records(conn, writer, records)
    finally:
        await conn.close()


OLD_ROW = """
INSERT INTO access_logs (event_id, outcome, status_code) VALUES ($1, 'allowed', 200)
"""
COLUMNS = """
SELECT column_name FROM information_schema.columns
WHERE table_name = 'access_logs' AND (column_name LIKE '%hash' OR column_name LIKE 'chain%')
"""
TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"


def test_the_chain_migration_goes_up_and_down_with_rows_in_place(
    fresh_logging: DatabaseSettings, roles: dict[str, RoleSpec]
) -> None:
    spec, database = roles["logging"], fresh_logging
    migrations.upgrade(spec, "0001", database)
    old = [uuid.uuid4().hex for _ in range(3)]
    for event_id in old:
        asyncio.run(fetch(database, OLD_ROW, event_id))

    migrations.upgrade(spec, "head", database)
    rows = asyncio.run(fetch(database, "SELECT * FROM access_logs ORDER BY id"))
    assert [row["event_id"] for row in rows] == old
    assert {(row["chain_writer"], row["chain_seq"], row["row_hash"]) for row in rows} == {
        (None, None, None)
    }
    assert asyncio.run(_store(database, "writer-a", [record(), record()])) == 2
    report = asyncio.run(_walk(database))
    assert not report.tampered
    assert (report.unchained.before, report.unchained.before_ids) == (3, (1, 3))
    assert [(chain.writer, chain.records) for chain in report.chains] == [("writer-a", 2)]

    # A row without a link stored after the chain began is no pre-chain record.
    asyncio.run(fetch(database, OLD_ROW, "f" * 32))
    report = asyncio.run(_walk(database))
    assert report.tampered
    assert report.unchained.after == 1
    assert report.unchained.after_first.startswith("id 6, event " + "f" * 32)
    asyncio.run(fetch(database, "DELETE FROM access_logs WHERE event_id = $1", "f" * 32))

    # Nor is one slipped in among them with a low id, or a pre-chain record deleted: the
    # migration sealed their set.
    forged = "INSERT INTO access_logs (id, event_id, outcome, status_code) VALUES (-1, $1, 'allowed', 200)"
    asyncio.run(fetch(database, forged, "e" * 32))
    report = asyncio.run(_walk(database))
    assert report.tampered
    assert "3 records then, 4 records now" in report.unchained.seal_broken
    asyncio.run(fetch(database, "DELETE FROM access_logs WHERE id IN (-1, 2)"))
    assert "3 records then, 2 records now" in asyncio.run(_walk(database)).unchained.seal_broken
    asyncio.run(
        fetch(
            database,
            "INSERT INTO access_logs (id, event_id, outcome, status_code) VALUES (2, $1, 'allowed', 200)",
            old[1],
        )
    )
    assert not asyncio.run(_walk(database)).tampered

    migrations.downgrade(spec, "0001", database)
    assert len(asyncio.run(fetch(database, "SELECT id FROM access_logs"))) == 5
    assert asyncio.run(fetch(database, COLUMNS)) == []
    tables = [row["tablename"] for row in asyncio.run(fetch(database, TABLES))]
    assert "access_log_chains" not in tables

    migrations.upgrade(spec, "head", database)
    report = asyncio.run(_walk(database))
    assert (report.tampered, report.unchained.before, report.chains) == (False, 5, [])


def test_a_rewritten_record_and_records_cut_off_the_end_are_found(
    chained: DatabaseSettings,
) -> None:
    asyncio.run(_store(chained, "writer-a", [record() for _ in range(6)]))
    asyncio.run(_store(chained, "writer-b", [record() for _ in range(4)]))
    # writer-a: seq 3 edited and its hash recomputed, as someone who knows the hash would.
    (row,) = asyncio.run(
        fetch(
            chained, "SELECT * FROM access_logs WHERE chain_writer = 'writer-a' AND chain_seq = 3"
        )
    )
    changed = {**dict(row), "outcome": "refused"}
    new_hash = link_hash("writer-a", 3, row["prev_hash"], changed)
    asyncio.run(
        fetch(
            chained,
            "UPDATE access_logs SET outcome = 'refused', row_hash = $2 WHERE id = $1",
            row["id"],
            new_hash,
        )
    )
    # writer-b: its last two records deleted; nothing after them shows a gap.
    asyncio.run(
        fetch(chained, "DELETE FROM access_logs WHERE chain_writer = 'writer-b' AND chain_seq > 2")
    )
    report = asyncio.run(_walk(chained))
    found = {chain.writer: chain for chain in report.chains}
    assert found["writer-a"].first["edited"].startswith(f"seq 3, id {row['id']}, event ")
    assert "rewritten with a new hash (the next record" in found["writer-a"].first["edited"]
    assert found["writer-b"].first["deleted"].startswith("seq 3-4 (2 records) after id ")

    # The writer goes on after the recorded head: the cut stays visible as a gap.
    asyncio.run(_store(chained, "writer-b", [record()]))
    report = asyncio.run(_walk(chained))
    writer_b = next(chain for chain in report.chains if chain.writer == "writer-b")
    assert writer_b.first["deleted"].startswith("seq 3-4 (2 records), between id ")
    assert writer_b.last_seq == 5


def test_verify_says_in_one_line_why_it_cannot_run(
    fresh_logging: DatabaseSettings,
    database_env: dict[str, str],
    roles: dict[str, RoleSpec],
    tmp_path: Path,
) -> None:
    spec = roles["logging"]
    migrations.upgrade(spec, "0001", fresh_logging)
    env = environment(database_env, roles, fresh_logging)
    nowhere = {**env, variable_name(spec, "port"): str(free_port())}
    unconfigured = {
        name: value
        for name, value in env.items()
        if not (name == "DB_HOST" or (name.startswith("MULTI_DB_") and name.endswith("_HOST")))
    }
    cases = [
        (env, ["--anchor", "nonsense"], "--anchor 'nonsense': expected WRITER:SEQ:HASH"),
        (env, [], "has no audit chain yet: run `multidb migrate logging`"),
        (nowhere, [], "cannot reach the logging database (postgresql://"),
        (unconfigured, [], "role 'logging' has no database configured (set MULTI_DB_LOGGING_HOST)"),
    ]
    for case_env, args, message in cases:
        answer = audit_verify(case_env, tmp_path, *args)
        assert answer.returncode == 2, (args, answer.stdout, answer.stderr)
        assert answer.stdout == ""
        assert answer.stderr.startswith("multidb audit verify: "), answer.stderr
        assert message in answer.stderr
        assert answer.stderr.count("\n") == 1, answer.stderr
        if fresh_logging.password:
            assert fresh_logging.password not in answer.stderr
