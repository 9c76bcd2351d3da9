"""Backups under faults: real PostgreSQL, real pg_dump, real processes, real file systems.

pg_dump is made to wait deterministically: another connection holds ``LOCK TABLE ... IN
ACCESS EXCLUSIVE MODE`` on a table of the role's database in an open transaction, so
pg_dump (and the backup's own row count) waits for its lock until we act. Nothing here
sleeps to let a race settle: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from multidb import migrations
from multidb.backups.engine import JOB_NAME, TABLES, BackupError, RoleBackups
from multidb.backups.wire import BackupManifest
from multidb.jobs import LOCK_SPACE, lock_key
from multidb.plugins import get_roles
from multidb.service import create_role_app
from multidb.settings import DatabaseSettings, Settings, load_settings
from multidb_devstack.embedded import EmbeddedPostgres, free_port
from tests.conftest import ADMIN, API_KEY, JWT_SECRET
from tests.processes import until, wait_ready

WAIT_S = 60.0
T = TypeVar("T")


# ---- helpers -------------------------------------------------------------------------


def _settings(database_env: dict[str, str], folder: Path, **extra: str) -> Settings:
    env = {
        **database_env,
        "API_KEYS": API_KEY,
        "JWT_SECRET": JWT_SECRET,
        "MULTI_DB_BACKUP_DIR": str(folder),
        **extra,
    }
    return load_settings(env, get_roles())


def _engine(settings: Settings, role: str) -> RoleBackups:
    return RoleBackups(settings.backups, get_roles()[role], settings.databases[role])


async def _until(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    return await until(check, what, WAIT_S)


async def _until_true(check: Callable[[], T | None], what: str) -> T:
    """:func:`_until` for a plain function."""

    async def checked() -> T | None:
        return check()

    return await _until(checked, what)


def _alive(pid: int) -> bool:
    """The process runs (a zombie nobody reaped yet does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _tool_processes(marker: str, name: str = "pg_dump") -> list[int]:
    """Live processes of program ``name`` with ``marker`` in one of their arguments."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        program = Path(argv[0].decode(errors="replace")).name if argv else ""
        if (
            program == name
            and any(marker.encode() in arg for arg in argv)
            and _alive(int(entry.name))
        ):
            found.append(int(entry.name))
    return found


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.asynccontextmanager
async def _held_table(database: DatabaseSettings, version_table: str) -> AsyncIterator[str]:
    """A table of the role's database locked ACCESS EXCLUSIVE in an open transaction
    (rolled back at the end): a pg_dump of the database waits for it."""
    conn = await database.connect(timeout=10)
    try:
        tables = [row[0] for row in await conn.fetch(TABLES)]
        table = next(name for name in tables if version_table not in name)
        await conn.execute("BEGIN")
        await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield table
    finally:
        await conn.close()


async def _backup_waits_for_lock(database: DatabaseSettings) -> bool:
    """Whether a backup tool's session waits for a lock right now."""
    conn = await database.connect(timeout=10)
    try:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'multidb-backup' "
            "AND wait_event_type = 'Lock'"
        )
    finally:
        await conn.close()
    return bool(waiting)


async def _waiting_pg_dump(database: DatabaseSettings, marker: str) -> int:
    """The pid of the pg_dump writing ``marker``, once it waits for the held table."""
    pids: list[int] = await _until_true(
        lambda: _tool_processes(marker), f"a pg_dump writing {marker}"
    )
    assert len(pids) == 1, pids
    await _until(lambda: _backup_waits_for_lock(database), "pg_dump waiting for its lock")
    return pids[0]


def _manifests(folder: Path) -> list[BackupManifest]:
    found = [
        msgspec.json.decode(path.read_bytes(), type=BackupManifest)
        for path in folder.glob("*.manifest.json")
    ]
    return sorted(found, key=lambda manifest: manifest.started_at)


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``where`` with ``options`` (unmounted at the end), or a skip."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "this test mounts a small tmpfs and is not allowed to here (it needs root with "
            f"CAP_SYS_ADMIN): {mounted.stderr.strip() or mounted.returncode}"
        )
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


class Service:
    """``python -m multidb.service <role>`` as a real process on a free port."""

    def __init__(self, role: str, env: dict[str, str], log: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "multidb.service", role, "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_ready(self.process, f"{self.url}/readyz")
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=ADMIN, timeout=10)

    def post(self, path: str) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", headers=ADMIN, timeout=10)

    def backups_job(self) -> dict[str, Any]:
        jobs = httpx.get(f"{self.url}/readyz", timeout=10).json()["jobs"]
        job: dict[str, Any] = next(job for job in jobs if job["name"] == "backups")
        return job

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=30)


def _process_env(database_env: dict[str, str], folder: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **database_env,
        "API_KEYS": API_KEY,
        "JWT_SECRET": JWT_SECRET,
        "MULTI_DB_ENV_FILE": os.devnull,
        "MULTI_DB_BACKUP_DIR": str(folder),
        **extra,
    }


# ---- 1. pg_dump killed mid-way ---------------------------------------------------------


@pytest.mark.anyio
async def test_a_killed_pg_dump_leaves_a_failed_manifest_and_no_file(
    database_env: dict[str, str], tmp_path: Path
) -> None:
    settings = _settings(database_env, tmp_path / "backups")
    engine = _engine(settings, "analytics")
    database = settings.databases["analytics"]
    earlier = await engine.verify(await engine.run_backup("api"))
    assert earlier.status == "ok"
    assert earlier.verified
    earlier_file = engine.store.dump_path(earlier)
    earlier_sha = _sha256(earlier_file)
    assert earlier_sha == earlier.sha256

    async with _held_table(database, engine.spec.version_table):
        manifest = engine.start_manifest("api")
        partial = engine.store.partial_path(manifest)
        run = asyncio.create_task(engine.run_backup(manifest=manifest))
        pid = await _waiting_pg_dump(database, str(partial))
        os.kill(pid, signal.SIGKILL)
        # The table is still locked: the run must notice pg_dump's death on its own.
        with pytest.raises(BackupError) as failed:
            await asyncio.wait_for(run, WAIT_S)

    said = str(failed.value)
    assert "pg_dump" in said
    assert "SIGKILL" in said, said
    recorded = engine.store.get(manifest.id)
    assert recorded is not None
    assert recorded.status == "failed"
    assert recorded.error == said
    assert recorded.finished_at is not None
    assert not engine.store.dump_path(manifest).exists()
    assert not partial.exists()
    assert engine.store.leftovers() == []
    # The earlier backup is untouched and still listed as good.
    assert _sha256(earlier_file) == earlier_sha
    listed = {m.id: m for m in engine.store.manifests()}
    assert set(listed) == {earlier.id, manifest.id}
    assert listed[earlier.id].status == "ok"
    assert listed[earlier.id].verified
    assert _names(engine.store.folder) == sorted(
        [
            earlier.file,
            engine.store.manifest_path(earlier).name,
            engine.store.manifest_path(manifest).name,
        ]
    )


@pytest.mark.anyio
async def test_a_backup_over_its_time_limit_is_stopped_and_says_so(
    database_env: dict[str, str], tmp_path: Path
) -> None:
    settings = _settings(database_env, tmp_path / "backups", MULTI_DB_BACKUP_TIMEOUT_S="2s")
    engine = _engine(settings, "archive")
    database = settings.databases["archive"]
    async with _held_table(database, engine.spec.version_table):
        manifest = engine.start_manifest("api")
        partial = engine.store.partial_path(manifest)
        run = asyncio.create_task(engine.run_backup(manifest=manifest))
        pid = await _waiting_pg_dump(database, str(partial))
        with pytest.raises(BackupError) as failed:
            await asyncio.wait_for(run, WAIT_S)
        await _until_true(lambda: not _alive(pid), "the stopped pg_dump is gone")
    assert str(failed.value) == "timed out after 2 s (MULTI_DB_BACKUP_TIMEOUT_S)"
    recorded = engine.store.get(manifest.id)
    assert recorded is not None
    assert (recorded.status, recorded.error) == ("failed", str(failed.value))
    assert engine.store.leftovers() == []
    assert not engine.store.dump_path(manifest).exists()


@pytest.mark.anyio
async def test_a_service_killed_mid_backup_is_cleaned_up_by_the_next_one(
    database_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "backups"
    settings = _settings(database_env, folder)
    database = settings.databases["archive"]
    spec = get_roles()["archive"]
    role_folder = folder / "archive"
    env = _process_env(database_env, folder)
    first = None
    orphan = None
    try:
        async with _held_table(database, spec.version_table):
            first = Service("archive", env, tmp_path / "first.log")
            started = first.post("/backups")
            assert started.status_code == 202, started.text
            abandoned = started.json()["id"]
            pid = await _waiting_pg_dump(database, str(role_folder))
            orphan = pid
            first.stop(signal.SIGKILL)
            # pg_dump goes with the service that ran it, even though it waits for a lock:
            # it must not keep its snapshot, locks and a half-written file behind.
            await _until_true(lambda: not _alive(pid), f"pg_dump {pid} gone with its service")
        orphan = None

        left = _manifests(role_folder)
        assert [(m.id, m.status) for m in left] == [(abandoned, "running")]
        assert any(name.endswith(".partial") for name in _names(role_folder))

        second = Service("archive", env, tmp_path / "second.log")
        try:
            answer = second.post("/backups")
            assert answer.status_code == 202, answer.text
            fresh = answer.json()["id"]

            def done() -> dict[str, Any] | None:
                manifest: dict[str, Any] = second.get(f"/backups/{fresh}").json()
                return manifest if manifest.get("verification") else None

            manifest = await _until_true(done, f"backup {fresh} verified")
            assert manifest["status"] == "ok", manifest
            old = second.get(f"/backups/{abandoned}").json()
            assert old["status"] == "failed"
            assert old["error"].startswith("interrupted"), old
            assert old["finished_at"] is not None
            assert not any(name.endswith(".partial") for name in _names(role_folder))
            info = second.get("/backup/info").json()["backups"]
            assert info["running"] is None
            assert info["last_backup"]["id"] == fresh
        finally:
            second.stop()
    finally:
        if first is not None:
            first.stop(signal.SIGKILL)
        if orphan is not None and _alive(orphan):
            os.kill(orphan, signal.SIGKILL)


# ---- 2. the backup folder full or not writable -----------------------------------------


@pytest.mark.anyio
async def test_a_full_backup_folder_fails_the_backup_with_no_partial(
    database_env: dict[str, str], tmp_path: Path
) -> None:
    with _tmpfs(tmp_path / "tiny", "size=16k,mode=0700") as tiny:
        settings = _settings(database_env, tiny)
        async with AsyncTestClient(app=create_role_app("default", settings)) as client:
            answer = await client.post("/backups", headers=ADMIN)
            assert answer.status_code == 202, answer.text
            backup_id = answer.json()["id"]

            async def failed() -> dict[str, Any] | None:
                manifest: dict[str, Any] = (
                    await client.get(f"/backups/{backup_id}", headers=ADMIN)
                ).json()
                return manifest if manifest["status"] != "running" else None

            manifest = await _until(failed, f"backup {backup_id} finished")
            assert manifest["status"] == "failed", manifest
            assert "No space left" in manifest["error"], manifest
            assert "pg_dump" in manifest["error"]
            assert _names(tiny / "default") == [manifest["file"].replace(".dump", ".manifest.json")]
            info = (await client.get("/backup/info", headers=ADMIN)).json()["backups"]
            assert "No space left" in info["last_failure"]
            assert info["last_backup"] is None


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["read-only", "a file"])
async def test_an_unwritable_backup_folder_answers_503_naming_it(
    database_env: dict[str, str], tmp_path: Path, how: str
) -> None:
    with contextlib.ExitStack() as stack:
        if how == "read-only":
            root = stack.enter_context(_tmpfs(tmp_path / "readonly", "ro,size=16k"))
        else:
            root = tmp_path / "not-a-folder"
            root.write_text("a file where the backup folder should be\n")
        settings = _settings(
            database_env,
            root,
            MULTI_DB_DEFAULT_BACKUP_INTERVAL="1s",
        )
        async with AsyncTestClient(app=create_role_app("default", settings)) as client:
            answer = await client.post("/backups", headers=ADMIN)
            assert answer.status_code == 503, answer.text
            detail = answer.json()["detail"]
            assert str(root / "default") in detail, detail
            assert "backup folder" in detail

            async def failure() -> dict[str, Any] | None:
                info = (await client.get("/backup/info", headers=ADMIN)).json()["backups"]
                return info if info["last_failure"] else None

            shown = await _until(failure, "the scheduled backup's failure in /backup/info")
            assert str(root / "default") in shown["last_failure"], shown
            assert shown["last_failure_at"] is not None
            assert shown["stale"] is True
            assert shown["last_backup"] is None
            assert (await client.get("/livez")).status_code == 200


# ---- 3. the database down at backup time -----------------------------------------------


@pytest.mark.anyio
async def test_a_database_down_at_backup_time_fails_then_recovers(
    database_env: dict[str, str], spare_cluster: EmbeddedPostgres, tmp_path: Path
) -> None:
    spec = get_roles()["archive"]
    settings = _settings(
        {**database_env, **spare_cluster.environment({"archive": spec})},
        tmp_path / "backups",
        MULTI_DB_ARCHIVE_BACKUP_INTERVAL="1s",
        MULTI_DB_ARCHIVE_DRILL_INTERVAL="off",
    )
    assert settings.backups.policy("archive").host == str(spare_cluster.pgdata)
    await asyncio.to_thread(migrations.upgrade, spec, "head", settings.databases["archive"])
    await asyncio.to_thread(spare_cluster.stop)

    async with AsyncTestClient(app=create_role_app("archive", settings)) as client:

        async def failure() -> dict[str, Any] | None:
            answer = await client.get("/backup/info", headers=ADMIN)
            assert answer.status_code == 200, answer.text
            info: dict[str, Any] = answer.json()["backups"]
            return info if info["last_failure"] else None

        down = await _until(failure, "the failed backup tick in /backup/info")
        assert down["last_backup"] is None
        assert down["stale"] is True
        assert (await client.get("/livez")).status_code == 200
        stats = await client.get("/stats", headers=ADMIN)
        assert stats.status_code in (200, 503), stats.text
        assert stats.json()["status"] == "unavailable"
        assert (await client.get("/backups", headers=ADMIN)).json()["backups"] == []

        await asyncio.to_thread(spare_cluster.start)

        async def recovered() -> dict[str, Any] | None:
            info: dict[str, Any] = (await client.get("/backup/info", headers=ADMIN)).json()[
                "backups"
            ]
            return info if info["last_backup"] and info["last_backup"]["verified"] else None

        up = await _until(recovered, "a good backup once the database is back")
        assert up["last_failure"] is None, up
        assert up["stale"] is False
        listed = (await client.get("/backups", headers=ADMIN)).json()["backups"]
        assert listed
        assert {b["status"] for b in listed} == {"ok"}
        assert (await client.get("/livez")).status_code == 200


# ---- 4. two replicas, one leader -------------------------------------------------------


@pytest.mark.anyio
async def test_two_replicas_never_back_up_at_once(
    database_env: dict[str, str], tmp_path: Path
) -> None:
    interval = 2.0
    folder = tmp_path / "backups"
    role_folder = folder / "analytics"
    env = _process_env(
        database_env,
        folder,
        MULTI_DB_ANALYTICS_BACKUP_INTERVAL=f"{interval:g}s",
        MULTI_DB_ANALYTICS_DRILL_INTERVAL="off",
    )
    wanted = 4
    replicas: list[Service] = []
    try:
        replicas = [Service("analytics", env, tmp_path / f"replica-{n}.log") for n in (1, 2)]

        def made() -> list[BackupManifest] | None:
            good = [m for m in _manifests(role_folder) if m.status == "ok" and m.verified]
            return good if len(good) >= wanted else None

        await _until_true(made, f"{wanted} verified backups from the two replicas")
        seen = [m for m in _manifests(role_folder) if m.status == "ok"]

        def counted() -> list[dict[str, Any]] | None:
            jobs = [replica.backups_job() for replica in replicas]
            return jobs if sum(job["runs"] for job in jobs) >= len(seen) else None

        # A run is counted once its tick has returned (verify and pruning follow the dump).
        jobs = await _until_true(counted, "the replicas' runs counted in /readyz")
    finally:
        for replica in replicas:
            replica.stop()

    manifests = _manifests(role_folder)
    # A run our SIGTERM cut short is the only one allowed not to be ok.
    finished = [m for m in manifests if not (m.error or "").startswith("interrupted")]
    assert len(manifests) - len(finished) <= 1, manifests
    assert len(finished) >= wanted
    assert all(m.status == "ok" for m in finished), [(m.id, m.status, m.error) for m in finished]
    assert all(m.trigger == "schedule" for m in manifests)
    for before, after in itertools.pairwise(manifests):
        assert before.finished_at is not None
        # Never at once; and never before the interval since the previous good one.
        assert after.started_at >= before.finished_at, (before, after)
        if before.status == "ok":
            gap = (after.started_at - before.finished_at).total_seconds()
            assert gap >= interval - 0.05, (gap, before, after)
    for job in jobs:
        assert job["failures"] == 0, job
        assert job["runs"] + job["skipped"] >= 1, job
    assert sum(job["runs"] for job in jobs) >= len(seen)
    window = (manifests[-1].started_at - manifests[0].started_at).total_seconds()
    assert len(manifests) <= window / interval + 1, (len(manifests), window)


# ---- 5. pruning ------------------------------------------------------------------------


def _failed_record(engine: RoleBackups) -> BackupManifest:
    manifest = engine.store.new("schedule")
    manifest.status = "failed"
    manifest.error = "pg_dump exited with 1: pg_dump: error: connection failed"
    manifest.finished_at = manifest.started_at
    engine.store.save(manifest)
    return manifest


@pytest.mark.anyio
async def test_pruning_keeps_the_newest_verified_backup(
    database_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "backups"

    def engine(keep: str) -> RoleBackups:
        return _engine(
            _settings(database_env, folder, MULTI_DB_LOGGING_BACKUP_KEEP=keep), "logging"
        )

    one = engine("1")
    verified = await one.verify(await one.run_backup("api"))
    assert verified.verified
    middle = await one.run_backup("api")
    failed = _failed_record(one)
    newest = await one.run_backup("api")
    running = one.store.new("api")
    one.store.save(running)

    def present() -> set[str]:
        return {m.id for m in one.store.manifests()}

    # KEEP=1: the newest good one stays, and so does the newest verified, though older.
    pruned = one.prune()
    assert [m.id for m in pruned] == [middle.id]
    assert present() == {verified.id, failed.id, newest.id, running.id}
    assert not one.store.dump_path(middle).exists()
    assert one.store.dump_path(verified).exists()
    assert one.store.dump_path(newest).exists()
    assert one.prune() == []

    # Past the age limit everything old goes, but never those two, nor a running one.
    latest = await one.run_backup("api")
    later = datetime.now(verified.started_at.tzinfo) + timedelta(hours=2)
    aged = engine("5,1h")
    assert aged.prune(now=datetime.now(verified.started_at.tzinfo)) == []
    gone = {m.id for m in aged.prune(now=later)}
    assert gone == {newest.id, failed.id}
    assert present() == {verified.id, latest.id, running.id}
    assert _names(one.store.folder) == sorted(
        name
        for m in (verified, latest, running)
        for name in ([one.store.manifest_path(m).name] + ([m.file] if m.id != running.id else []))
    )
    # A newer verified backup takes over the protection: the old one may go now.
    await aged.verify(latest)
    assert {m.id for m in aged.prune(now=later)} == {verified.id}
    assert present() == {latest.id, running.id}


# ---- 6. no password where ps or a child could read it ----------------------------------


@pytest.mark.anyio
async def test_the_password_is_never_in_argv_nor_the_environment(
    database_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(database_env, tmp_path / "backups")
    engine = _engine(settings, "logging")
    database = settings.databases["logging"]
    password = database.password
    assert password
    # Secrets of this process that a child must not inherit.
    monkeypatch.setenv("DB_PASSWORD", password)
    monkeypatch.setenv("JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("MULTI_DB_LOGGING_PASSWORD", password)

    async with _held_table(database, engine.spec.version_table):
        manifest = engine.start_manifest("api")
        partial = engine.store.partial_path(manifest)
        run = asyncio.create_task(engine.run_backup(manifest=manifest))
        pid = await _waiting_pg_dump(database, str(partial))
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = dict(
            item.decode().partition("=")[::2]
            for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if item
        )
        passfile = Path(environ["PGPASSFILE"])
        passfile_mode = stat.S_IMODE(passfile.stat().st_mode)
        folder_mode = stat.S_IMODE(passfile.parent.stat().st_mode)
        passfile_text = passfile.read_text()
    done = await asyncio.wait_for(run, WAIT_S)

    assert done.status == "ok"
    assert password.encode() not in argv
    assert all(password not in value for value in environ.values()), sorted(environ)
    assert JWT_SECRET not in str(environ)
    for secret in ("DB_PASSWORD", "JWT_SECRET", "MULTI_DB_LOGGING_PASSWORD", "PGPASSWORD"):
        assert secret not in environ, sorted(environ)
    assert not [name for name in environ if "PASSWORD" in name or "SECRET" in name]
    assert passfile_mode == 0o600
    assert folder_mode == 0o700
    assert password in passfile_text
    assert environ["PGAPPNAME"] == "multidb-backup"
    # Gone with the run.
    assert not passfile.exists()
    assert not passfile.parent.exists()


@pytest.mark.anyio
async def test_losing_the_lock_stops_the_operation_and_says_so(
    service_client: Any, database_env: dict[str, str], tmp_path: Path
) -> None:
    """The connection holding the role's lock breaks (an administrator ends it, a network
    drop): the backup stops at once and its manifest says why, so no second leader ever
    meets a live run."""
    settings = _settings(database_env, tmp_path / "backups")
    database = settings.databases["logging"]
    key = lock_key("logging", JOB_NAME) & 0xFFFFFFFF
    async with (
        _held_table(database, "alembic_version_logging"),
        service_client("logging", settings) as client,
    ):
        started = await client.post("/backups", headers=ADMIN)
        assert started.status_code == 202, started.text
        backup_id = started.json()["id"]
        folder = Path(settings.backups.directory, "logging")
        partial = await _until_true(
            lambda: next(folder.glob(".*.partial"), None), "pg_dump writing its partial file"
        )
        pid = await _waiting_pg_dump(database, str(partial))
        admin = await database.connect(timeout=10)
        try:
            ended = await admin.fetchval(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 AND granted",
                LOCK_SPACE,
                key,
            )
        finally:
            await admin.close()
        assert ended is True

        async def failed() -> dict[str, Any] | None:
            manifest: dict[str, Any] = (
                await client.get(f"/backups/{backup_id}", headers=ADMIN)
            ).json()
            return manifest if manifest["status"] == "failed" else None

        manifest = await _until(failed, "the backup marked failed")
        assert "lost the role's lock" in manifest["error"], manifest["error"]
        await _until_true(lambda: not _alive(pid), "pg_dump stopped")
        assert not partial.exists()
        # The lock is free again: the next backup starts.
    async with service_client("logging", settings) as client:
        again = await client.post("/backups", headers=ADMIN)
        assert again.status_code == 202, again.text


@pytest.mark.anyio
async def test_backups_started_by_the_api_are_pruned_with_the_schedule_off(
    service_client: Any, database_env: dict[str, str], tmp_path: Path
) -> None:
    settings = _settings(database_env, tmp_path / "backups", MULTI_DB_ARCHIVE_BACKUP_KEEP="1")
    async with service_client("archive", settings) as client:
        ids = []
        for _ in range(3):
            answer = await client.post("/backups", headers=ADMIN)
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])

            async def settled(backup_id: str = ids[-1]) -> bool:
                state = (await client.get("/backup/info", headers=ADMIN)).json()["backups"]
                return (
                    state["running"] is None and (state["last_backup"] or {}).get("id") == backup_id
                )

            await _until(settled, f"backup {ids[-1]} done")
        listed = (await client.get("/backups", headers=ADMIN)).json()["backups"]
        assert [b["id"] for b in listed] == [ids[-1]]
        assert listed[0]["verification"]["passed"] is True


@pytest.mark.anyio
async def test_a_left_scratch_database_with_a_quote_in_its_name_is_dropped(
    database_env: dict[str, str], tmp_path: Path
) -> None:
    settings = _settings(database_env, tmp_path / "backups")
    engine = _engine(settings, "archive")
    name = f'{engine.scratch_prefix}x"y'
    admin = await settings.databases["archive"].connect(timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name.replace(chr(34), chr(34) * 2)}"')
        assert await engine.drop_scratch_databases() == [name]
        assert not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
    finally:
        await admin.close()
