"""Archiving through the archive service, the gateway and ``multidb archive``.

Real processes (the archive service and the gateway), real PostgreSQL. Everything here
(the service app, the fleet, the command's processes) archives in a default and an archive
database of this module's own (``own_databases``), never in the suite's shared ones: a run
there would make the mover's login on the shared default database, and count rows other
tests own. The rows a test archives are seeded with timestamps from 2001 (older than every
default policy) and removed from those databases at its end, so the next test's counts are
its own rows only.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from multidb.auth import mint_token
from multidb.jobs import LOCK_SPACE, lock_key
from multidb.plugins import get_roles
from multidb.service import create_role_app
from multidb.settings import DatabaseSettings, Settings, load_settings
from multidb_archive.runs import REQUESTER_MAX, requester
from tests.archiving import own_databases
from tests.conftest import ADMIN, API_KEY, JWT_SECRET, bearer
from tests.fleet import GATEWAY, ProcessFleet
from tests.processes import poll

WAIT_S = 60.0
PROBLEM = "application/problem+json"
# Older than every default policy (Media: untouched 365d, People/User: deleted 30d).
OLD = datetime(2001, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def own_env(database_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The suite's variables, with the default and archive roles on databases of this
    module's own (dropped at its end, with the login the mover made)."""
    with own_databases(database_env) as env:
        yield env


@pytest.fixture(scope="module")
def archive_env(own_env: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        **own_env,
        "API_KEYS": API_KEY,
        "JWT_SECRET": JWT_SECRET,
        "MULTI_DB_ENV_FILE": os.devnull,
    }


@pytest.fixture(scope="module")
def own_settings(own_env: dict[str, str]) -> Settings:
    return load_settings({**own_env, "API_KEYS": API_KEY, "JWT_SECRET": JWT_SECRET}, get_roles())


@pytest.fixture(scope="module")
def databases(own_settings: Settings) -> dict[str, DatabaseSettings]:
    return own_settings.databases


@pytest.fixture(scope="module")
def fleet(
    own_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessFleet]:
    fleet = ProcessFleet(own_env, tmp_path_factory.mktemp("archive-logs"))
    try:
        fleet.start("archive")
        fleet.start(GATEWAY)
        yield fleet
    finally:
        fleet.close()


@pytest.fixture(scope="module")
def gateway(fleet: ProcessFleet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.gateway, timeout=10) as client:
        yield client


@asynccontextmanager
async def _connected(database: DatabaseSettings) -> AsyncIterator[asyncpg.Connection]:
    conn = await database.connect()
    try:
        yield conn
    finally:
        await conn.close()


class Seeded:
    """Users (soft-deleted in 2001) and media (untouched since 2001) of one test."""

    def __init__(self, databases: dict[str, DatabaseSettings]) -> None:
        self.databases = databases
        self.tag = f"archtest-{uuid.uuid4().hex[:10]}"
        self.users: list[int] = []
        self.media: list[int] = []

    async def seed(self, users: int, media: int) -> None:
        async with _connected(self.databases["default"]) as conn:
            for index in range(users):
                name = f"{self.tag}-{index}"
                self.users.append(
                    await conn.fetchval(
                        "INSERT INTO users (username, email, hashed_password, created_at,"
                        " updated_at, deleted_at) VALUES ($1, $2, 'x', $3,"
                        " $3, $3) RETURNING id",
                        name,
                        f"{name}@example.test",
                        OLD,
                    )
                )
            for index in range(media):
                self.media.append(
                    await conn.fetchval(
                        "INSERT INTO media (filename, original_name, mime_type, size_bytes,"
                        " path, created_at, updated_at) VALUES ($1, $1, 'image/png', 10, $2,"
                        " $3, $3) RETURNING id",
                        f"{self.tag}-{index}.png",
                        f"/tmp/{self.tag}-{index}.png",
                        OLD,
                    )
                )

    async def counts(self) -> dict[str, int]:
        """Of this test's rows: users and media in default, in the archive."""
        async with _connected(self.databases["default"]) as conn:
            users = await conn.fetchval(
                "SELECT count(*) FROM users WHERE id = ANY($1::bigint[])", self.users
            )
            media = await conn.fetchval(
                "SELECT count(*) FROM media WHERE id = ANY($1::bigint[])", self.media
            )
        async with _connected(self.databases["archive"]) as conn:
            archived_users = await conn.fetchval(
                "SELECT count(*) FROM archived_users WHERE original_id = ANY($1::bigint[])",
                self.users,
            )
            archived_media = await conn.fetchval(
                "SELECT count(*) FROM archived_media WHERE original_id = ANY($1::bigint[])",
                self.media,
            )
        return {
            "users": users,
            "media": media,
            "archived_users": archived_users,
            "archived_media": archived_media,
        }

    async def remove(self) -> None:
        async with _connected(self.databases["default"]) as conn:
            await conn.execute("DELETE FROM users WHERE id = ANY($1::bigint[])", self.users)
            await conn.execute("DELETE FROM media WHERE id = ANY($1::bigint[])", self.media)
        async with _connected(self.databases["archive"]) as conn:
            await conn.execute(
                "DELETE FROM archived_users WHERE original_id = ANY($1::bigint[])", self.users
            )
            await conn.execute(
                "DELETE FROM archived_media WHERE original_id = ANY($1::bigint[])", self.media
            )


@pytest.fixture
def seeded(databases: dict[str, DatabaseSettings]) -> Iterator[Seeded]:
    rows = Seeded(databases)
    try:
        yield rows
    finally:
        asyncio.run(rows.remove())


def _finished(client: httpx.Client, location: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        answer = client.get(location, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        report: dict[str, Any] = answer.json()
        return report if report["state"] != "running" else None

    found: dict[str, Any] = poll(done, f"the run at {location} to finish", WAIT_S)
    return found


def _idle(client: httpx.Client) -> None:
    """No run holds the mover (before a test starts its own)."""

    def idle() -> bool:
        stats = client.get("/database/archive/stats", headers=ADMIN).json()
        return stats["detail"]["archiving"].get("running") is None

    poll(idle, "no archive run going", WAIT_S)


# ---- through the gateway --------------------------------------------------------------------


def test_a_run_answers_202_with_its_location_then_shows_the_rows_moved(
    gateway: httpx.Client, seeded: Seeded
) -> None:
    asyncio.run(seeded.seed(users=2, media=1))
    _idle(gateway)
    answer = gateway.post(
        "/database/archive/runs", json={"models": ["Media", "User"]}, headers=ADMIN
    )
    assert answer.status_code == 202, answer.text
    started = answer.json()
    assert started["state"] == "running"
    assert (started["kind"], started["trigger"], started["dry_run"]) == ("archive", "http", False)
    assert started["requested_by"]
    location = answer.headers["location"]
    assert location == f"/database/archive/runs/{started['id']}"

    report = _finished(gateway, location)
    assert report["state"] == "done", report
    assert report["models"]["User"]["rows"] == 2
    assert report["models"]["Media"]["rows"] == 1
    assert report["models"]["User"]["bytes"] > 0
    assert asyncio.run(seeded.counts()) == {
        "users": 0,
        "media": 0,
        "archived_users": 2,
        "archived_media": 1,
    }
    listed = gateway.get("/database/archive/runs", headers=ADMIN)
    assert listed.status_code == 200
    assert started["id"] in [run["id"] for run in listed.json()["runs"]]
    assert len(listed.json()["runs"]) <= 20


def test_a_dry_run_moves_nothing_and_says_what_would_move(
    gateway: httpx.Client, seeded: Seeded
) -> None:
    asyncio.run(seeded.seed(users=1, media=0))
    _idle(gateway)
    answer = gateway.post(
        "/database/archive/runs", json={"dry_run": True, "models": ["User"]}, headers=ADMIN
    )
    assert answer.status_code == 202, answer.text
    report = _finished(gateway, answer.headers["location"])
    assert (report["state"], report["dry_run"]) == ("done", True)
    assert report["models"]["User"]["rows"] >= 1
    assert asyncio.run(seeded.counts())["users"] == 1


def test_a_second_run_is_409_while_the_mover_is_held(
    gateway: httpx.Client, databases: dict[str, DatabaseSettings]
) -> None:
    _idle(gateway)

    async def while_held() -> httpx.Response:
        async with _connected(databases["archive"]) as conn:
            key = lock_key("archive", "mover")
            await conn.execute("SELECT pg_advisory_lock($1, $2)", LOCK_SPACE, key)
            try:
                async with httpx.AsyncClient(base_url=str(gateway.base_url), timeout=10) as http:
                    return await http.post("/database/archive/runs", json={}, headers=ADMIN)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1, $2)", LOCK_SPACE, key)

    answer = asyncio.run(while_held())
    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM)
    assert "another archive run" in answer.json()["detail"]


def test_bad_requests_are_400_naming_what_is_wrong(gateway: httpx.Client) -> None:
    unknown_field = gateway.post("/database/archive/runs", json={"modles": []}, headers=ADMIN)
    assert unknown_field.status_code == 400, unknown_field.text
    assert "modles" in unknown_field.json()["detail"]
    wrong_type = gateway.post("/database/archive/runs", json={"dry_run": "yes"}, headers=ADMIN)
    assert wrong_type.status_code == 400, wrong_type.text
    assert "dry_run" in wrong_type.json()["detail"]
    not_json = gateway.post("/database/archive/runs", content=b"{", headers=ADMIN)
    assert not_json.status_code == 400, not_json.text
    _idle(gateway)
    unknown_model = gateway.post("/database/archive/runs", json={"models": ["Nope"]}, headers=ADMIN)
    assert unknown_model.status_code == 400, unknown_model.text
    assert "Nope" in unknown_model.json()["detail"]


def test_runs_need_db_admin(gateway: httpx.Client) -> None:
    for scope in ("db:read", "db:admin:default"):
        headers = bearer(scope)
        assert gateway.post("/database/archive/runs", json={}, headers=headers).status_code == 403
        assert gateway.get("/database/archive/runs", headers=headers).status_code == 403
        assert gateway.get("/database/archive/runs/abc", headers=headers).status_code == 403
    assert gateway.get("/database/archive/runs").status_code == 401
    # db:admin on the archive database is enough.
    assert (
        gateway.get("/database/archive/runs", headers=bearer("db:admin:archive")).status_code == 200
    )


def test_a_subject_longer_than_the_column_still_starts_a_run(
    gateway: httpx.Client, seeded: Seeded, databases: dict[str, DatabaseSettings]
) -> None:
    # requested_by and archived_by hold 255 characters; a JWT's sub is the caller's to pick.
    subject = "tester\x00" + "é" * 400
    token = mint_token(JWT_SECRET, subject, ["db:admin"], 3600)
    asyncio.run(seeded.seed(users=1, media=0))
    _idle(gateway)
    answer = gateway.post(
        "/database/archive/runs",
        json={"models": ["User"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 202, answer.text
    requested_by = answer.json()["requested_by"]
    assert len(requested_by) == REQUESTER_MAX
    assert requested_by.startswith("tester\ufffdééé")
    assert "…" in requested_by
    report = _finished(gateway, answer.headers["location"])
    assert (report["state"], report["requested_by"]) == ("done", requested_by), report

    async def archived_by() -> str:
        async with _connected(databases["archive"]) as conn:
            found: str = await conn.fetchval(
                "SELECT archived_by FROM archived_users WHERE original_id = $1", seeded.users[0]
            )
            return found

    assert asyncio.run(archived_by()) == requested_by


def test_long_subjects_are_cut_apart_and_short_ones_kept() -> None:
    assert requester("api-key:ops") == "api-key:ops"
    assert requester("a" * REQUESTER_MAX) == "a" * REQUESTER_MAX
    one, two = requester("a" * 300 + "1"), requester("a" * 300 + "2")
    assert len(one) == len(two) == REQUESTER_MAX
    assert one != two, "two subjects that share their beginning stay apart"
    assert requester("x\ud800y") == "x\ufffdy"


def test_an_unknown_run_is_404(gateway: httpx.Client) -> None:
    for run_id in ("000000000000", "not a run id at all", "x" * 100):
        answer = gateway.get(f"/database/archive/runs/{run_id}", headers=ADMIN)
        assert answer.status_code == 404, (run_id, answer.text)
        assert answer.headers["content-type"].startswith(PROBLEM)
    # Runs are the archive role's only.
    assert gateway.get("/database/default/runs", headers=ADMIN).status_code == 404
    assert gateway.post("/database/nope/runs", json={}, headers=ADMIN).status_code == 404


def test_archive_stats_show_the_movers_status(gateway: httpx.Client) -> None:
    answer = gateway.get("/database/archive/stats", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    archiving = answer.json()["detail"]["archiving"]
    assert "error" not in archiving, archiving
    assert archiving["schedule"] == "off"
    assert set(archiving["policy"]) == {"Media", "People", "User"}
    assert "archived" in archiving
    assert archiving["pending_batches"] == 0


def test_the_archive_service_down_is_503(fleet: ProcessFleet, gateway: httpx.Client) -> None:
    fleet.stop("archive")
    try:
        for answer in (
            gateway.post("/database/archive/runs", json={}, headers=ADMIN),
            gateway.get("/database/archive/runs", headers=ADMIN),
            gateway.get("/database/archive/runs/000000000000", headers=ADMIN),
        ):
            assert answer.status_code == 503, answer.text
            assert "archive service" in answer.json()["detail"]
    finally:
        fleet.start("archive")


# ---- the service alone ------------------------------------------------------------------------


async def test_without_the_default_database_runs_are_refused_and_status_says_why(
    own_settings: Settings,
) -> None:
    archive = own_settings.databases["archive"]
    alone = msgspec.structs.replace(own_settings, databases={"archive": archive})
    async with AsyncTestClient(app=create_role_app("archive", alone)) as client:
        answer = await client.post("/runs", json={}, headers=ADMIN)
        assert answer.status_code == 503, answer.text
        assert "default database is not configured" in answer.json()["detail"]
        stats = await client.get("/stats", headers=ADMIN)
        assert stats.status_code == 200
        assert "default database is not configured" in stats.json()["detail"]["archiving"]["error"]


def test_a_bad_archive_setting_stops_the_service_with_one_line(
    archive_env: dict[str, str],
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "multidb.service", "archive", "--port", "1"],
        env={**archive_env, "MULTI_DB_ARCHIVE_POLICY": "Invoices: deleted 30d"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "MULTI_DB_ARCHIVE_POLICY" in lines[0]
    assert "Invoices" in lines[0]


# ---- multidb archive ---------------------------------------------------------------------------


def _multidb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "multidb.cli", "archive", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_command_line_dry_runs_runs_shows_status_and_unarchives(
    archive_env: dict[str, str], seeded: Seeded
) -> None:
    asyncio.run(seeded.seed(users=2, media=0))

    dry = _multidb(archive_env, "run", "--dry-run", "User")
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout
    assert "User" in dry.stdout
    assert asyncio.run(seeded.counts())["users"] == 2, "a dry run changes nothing"

    ran = _multidb(archive_env, "run", "--json", "User")
    assert ran.returncode == 0, ran.stderr
    assert '"state": "done"' in ran.stdout
    assert '"trigger": "cli"' in ran.stdout
    assert asyncio.run(seeded.counts())["archived_users"] == 2

    status = _multidb(archive_env, "status")
    assert status.returncode == 0, status.stderr
    assert "schedule: off" in status.stdout
    assert "last run:" in status.stdout

    back = _multidb(archive_env, "unarchive", "User", str(seeded.users[0]))
    assert back.returncode == 0, back.stderr
    assert "unarchive run" in back.stdout
    counts = asyncio.run(seeded.counts())
    assert (counts["users"], counts["archived_users"]) == (1, 1)


def test_the_command_line_refuses_bad_input_with_one_line_and_exit_2(
    archive_env: dict[str, str],
) -> None:
    for args in (("run", "Nope"), ("unarchive", "User"), ("unarchive", "User", "twelve")):
        refused = _multidb(archive_env, *args)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1, (args, refused.stderr)


def test_the_command_line_says_busy_with_exit_3(
    archive_env: dict[str, str], databases: dict[str, DatabaseSettings]
) -> None:
    async def while_held() -> subprocess.CompletedProcess[str]:
        async with _connected(databases["archive"]) as conn:
            key = lock_key("archive", "mover")
            await conn.execute("SELECT pg_advisory_lock($1, $2)", LOCK_SPACE, key)
            try:
                return await asyncio.to_thread(_multidb, archive_env, "run", "User")
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1, $2)", LOCK_SPACE, key)

    busy = asyncio.run(while_held())
    assert busy.returncode == 3, (busy.stdout, busy.stderr)
    assert "another run holds the mover" in busy.stderr


def test_the_command_line_says_a_database_is_unreachable_in_one_line(
    archive_env: dict[str, str],
) -> None:
    # The archive database down: no run can start (nor a status be read), one line, exit 1.
    archive_down = {**archive_env, "MULTI_DB_ARCHIVE_PORT": "1"}
    for args in (
        ("status",),
        ("status", "--json"),
        ("run", "User"),
        ("run", "--dry-run"),
        ("unarchive", "User", "1"),
        ("unarchive", "--all", "User"),
    ):
        refused = _multidb(archive_down, *args)
        assert refused.returncode == 1, (args, refused.stdout, refused.stderr)
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, (args, refused.stdout, refused.stderr)
        assert lines[0] == (
            "multidb archive: database 'archive' is unavailable: connection refused"
        ), args
        assert refused.stdout == "", (args, refused.stdout)
    # The default database down: the run starts, fails, and its report says why.
    default_down = {**archive_env, "DB_PORT": "1"}
    for args in (("run", "User"), ("unarchive", "User", "1")):
        failed = _multidb(default_down, *args)
        assert failed.returncode == 1, (args, failed.stdout, failed.stderr)
        assert "Traceback" not in failed.stderr, (args, failed.stderr)
        assert ": failed" in failed.stdout, (args, failed.stdout)
        assert "database 'default' is unavailable" in failed.stdout, (args, failed.stdout)
