"""Backup, verify, drill, restore and prune of one role, with the real PostgreSQL tools.

A backup is ``pg_dump --format=custom`` in the snapshot of a ``REPEATABLE READ``
transaction that exports it (``pg_export_snapshot()``, ``pg_dump --snapshot``), so the
row counts and the Alembic revision the manifest records are those of the dump itself.
The dump is written under a temporary name, hashed, fsynced and renamed: a killed or
failed run leaves no file that looks complete, and its manifest says ``failed``.

A verify checks the sha256 and has ``pg_restore`` read the whole archive (``-f
/dev/null``; ``--list`` would read the table of contents only). A drill restores the dump
into a scratch database it creates, compares the Alembic revision and every table's row
count with the manifest, and drops the scratch database.

Only one operation runs per role at a time: :func:`try_lead` takes the advisory lock the
role's ``backups`` job holds (:mod:`multidb.jobs`), across every replica of the service
and the ``multidb backup`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from multidb.backups.policy import BackupSettings
from multidb.backups.store import BackupStore, create_private, stamp, sync_folder
from multidb.backups.tools import (
    BackupToolError,
    PgTools,
    find_tools,
    tied_to_us,
    tool_environment,
)
from multidb.backups.wire import BackupManifest, DrillResult, Verification
from multidb.errors import describe
from multidb.jobs import LOCK_SPACE, lock_key
from multidb.roles import RoleSpec
from multidb.settings import DatabaseSettings

log = logging.getLogger("multidb.backups")

JOB_NAME = "backups"
CONNECT_TIMEOUT_S = 10.0
# What of a tool's stderr is kept to explain a failure.
STDERR_LINES = 20
FAILED_KEEP = 10
SCRATCH_PREFIX = "multidb_drill_"
# How often the connection holding the role's lock is checked during an operation.
LEAD_CHECK_S = 5.0
T = TypeVar("T")
LOST_LEAD = "lost the role's lock (its database connection broke)"
TABLES = """
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema'
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1
"""

# (done, total, what): a long step's progress, for the command line.
Progress = Callable[[int, int, str], None]


class BackupError(Exception):
    """An operation failed; the message is the one line to record and show."""


class BackupBusyError(BackupError):
    """Another operation holds the role's backup lock."""


def _now() -> datetime:
    return datetime.now(UTC)


async def try_lead(database: DatabaseSettings, role: str) -> asyncpg.Connection | None:
    """A connection holding the role's backup lock (in an open transaction: the lock goes
    with it, and with the connection if this process dies), or None if another holds it."""
    conn = await database.connect(timeout=CONNECT_TIMEOUT_S)
    try:
        # The lock lives as long as this idle transaction: a server-wide idle timeout
        # must not end it mid-backup.
        await conn.execute("SET idle_in_transaction_session_timeout = 0")
        await conn.execute("BEGIN")
        led = await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock($1, $2)", LOCK_SPACE, lock_key(role, JOB_NAME)
        )
    except BaseException:
        await _close(conn)
        raise
    if not led:
        await _close(conn)
        return None
    return conn


class LeadLostError(BackupError):
    """The connection holding the role's lock broke: another replica may lead now."""


async def while_led(lock: asyncpg.Connection, operation: Awaitable[T]) -> T:
    """Run ``operation`` while ``lock``'s connection (the one holding the role's lock) stays
    alive; when it breaks, the lock is gone with it, so the operation is stopped (its tools
    killed, its manifest marked failed) before another leader's clean-up meets it."""
    work = asyncio.ensure_future(operation)
    lost = False

    async def watch() -> None:
        nonlocal lost
        while not work.done():
            await asyncio.sleep(LEAD_CHECK_S)
            try:
                await asyncio.wait_for(lock.fetchval("SELECT 1"), CONNECT_TIMEOUT_S)
            except Exception:
                lost = True
                work.cancel(LOST_LEAD)
                return

    watcher = asyncio.create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if lost and not _being_cancelled():
            raise LeadLostError(LOST_LEAD) from None
        raise
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _close(conn: asyncpg.Connection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), CONNECT_TIMEOUT_S)


async def run_tool(
    args: Sequence[str], env: dict[str, str], on_line: Callable[[str], None] | None = None
) -> None:
    """Run a PostgreSQL tool; raise :class:`BackupToolError` with its error line when it
    fails. Cancelling kills it."""
    name = Path(args[0]).name
    process = await asyncio.create_subprocess_exec(
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=tied_to_us(),  # a single system call in the child, see tied_to_us
    )
    tail: deque[str] = deque(maxlen=STDERR_LINES)
    try:
        assert process.stderr is not None  # noqa: S101 - asked for above
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            tail.append(line)
            if on_line is not None:
                on_line(line)
        code = await process.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(Exception):
            await asyncio.shield(process.wait())
        raise
    if code != 0:
        errors = [line for line in tail if "error:" in line or "FATAL" in line]
        said = (errors or list(tail) or [""])[0].strip()
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with {code}"
        raise BackupToolError(f"{name} {how}" + (f": {said}" if said else ""))


async def _together(dump: Coroutine[Any, Any, None], count: Coroutine[Any, Any, None]) -> None:
    """Run both; the first to fail cancels the other and its error is raised (pg_dump's
    first). A pg_dump that dies ends the run at once, even while the row count waits for a
    lock that pg_dump waited for too; a failed count stops pg_dump."""
    tasks = [asyncio.create_task(dump), asyncio.create_task(count)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def _signal_name(number: int) -> str:
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def _digest(path: Path) -> tuple[int, str]:
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return os.fstat(handle.fileno()).st_size, digest


def _seal(partial: Path, final: Path) -> tuple[int, str]:
    """Hash, fsync and rename the finished dump into place."""
    with partial.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        os.fsync(handle.fileno())
        size = os.fstat(handle.fileno()).st_size
    os.replace(partial, final)
    sync_folder(final.parent)
    return size, digest


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BackupError | BackupToolError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    return describe(exc, int(CONNECT_TIMEOUT_S * 1000))


async def _server_major(conn: asyncpg.Connection) -> tuple[int, str]:
    number = int(await conn.fetchval("SHOW server_version_num"))
    version = str(await conn.fetchval("SHOW server_version")).split()[0]
    return number // 10000, version


async def _revision(conn: asyncpg.Connection, table: str) -> str | None:
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
        return None
    revision: str | None = await conn.fetchval(f'SELECT version_num FROM "{table}"')
    return revision


async def _row_counts(conn: asyncpg.Connection, tables: Sequence[str]) -> dict[str, int]:
    # The names come from format('%I.%I'), quoted by the server itself.
    return {table: int(await conn.fetchval(f"SELECT count(*) FROM {table}")) for table in tables}


class RoleBackups:
    """The backups of ``spec``'s role in ``settings.directory``."""

    def __init__(
        self, settings: BackupSettings, spec: RoleSpec, database: DatabaseSettings
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.database = database
        self.policy = settings.policy(spec.name)
        self.store = BackupStore(Path(settings.directory), spec.name)

    @property
    def scratch_prefix(self) -> str:
        """Scratch databases of this role's drills: ``multidb_drill_<role>_<id>``."""
        return f"{SCRATCH_PREFIX}{self.spec.name}_"

    async def drop_scratch_databases(self) -> list[str]:
        """Drop scratch databases a killed drill of this role left behind. Only the holder
        of the role's lock may call this: no drill of the role is then running."""
        conn = await self.database.connect(timeout=CONNECT_TIMEOUT_S)
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
                self.scratch_prefix,
            )
            for row in rows:
                await conn.execute(
                    f"DROP DATABASE IF EXISTS {quote_identifier(row[0])} WITH (FORCE)"
                )
        finally:
            await _close(conn)
        return [row[0] for row in rows]

    def _tools(self, major: int) -> PgTools:
        return find_tools(self.settings.bin_dir, major)

    def _environment(
        self, dbname: str | None = None
    ) -> contextlib.AbstractContextManager[dict[str, str]]:
        return tool_environment(self.database, host=self.policy.host, dbname=dbname)

    # ---- backup ----------------------------------------------------------------------

    def start_manifest(self, trigger: str) -> BackupManifest:
        """A ``running`` manifest, saved: raise :class:`BackupError` if the folder is not
        writable."""
        manifest = self.store.new(trigger)
        try:
            self.store.prepare()
            self.store.save(manifest)
        except OSError as exc:
            msg = f"cannot write to the backup folder {self.store.folder}: {_describe(exc)}"
            raise BackupError(msg) from None
        return manifest

    async def run_backup(
        self,
        trigger: str = "schedule",
        *,
        manifest: BackupManifest | None = None,
        progress: Progress | None = None,
    ) -> BackupManifest:
        """Dump the role's database; the manifest says ``ok`` or why it ``failed``.
        Raise :class:`BackupError` when it failed."""
        manifest = manifest or self.start_manifest(trigger)
        started = time.monotonic()
        partial = self.store.partial_path(manifest)
        limit = self.settings.timeout_s
        try:
            async with asyncio.timeout(limit):
                await self._dump(manifest, partial, progress)
        except BaseException as exc:
            # Nothing that looks complete stays beside a failed manifest.
            partial.unlink(missing_ok=True)
            self.store.dump_path(manifest).unlink(missing_ok=True)
            manifest.status = "failed"
            if isinstance(exc, asyncio.CancelledError):
                why = exc.args[0] if exc.args and exc.args[0] else "the service stopped"
                manifest.error = f"interrupted: {why}"
            elif isinstance(exc, TimeoutError):
                manifest.error = f"timed out after {limit:g} s (MULTI_DB_BACKUP_TIMEOUT_S)"
            else:
                manifest.error = _describe(exc)
            manifest.finished_at = _now()
            manifest.duration_s = round(time.monotonic() - started, 3)
            with contextlib.suppress(OSError):
                self.store.save(manifest)
            log.error(
                "backup %s of role %s failed: %s", manifest.id, self.spec.name, manifest.error
            )
            if isinstance(exc, Exception):
                raise BackupError(manifest.error) from None
            raise
        manifest.status = "ok"
        manifest.finished_at = _now()
        manifest.duration_s = round(time.monotonic() - started, 3)
        self._save(manifest)
        log.info(
            "backup %s of role %s: %d bytes in %.1f s",
            manifest.id,
            self.spec.name,
            manifest.size_bytes or 0,
            manifest.duration_s,
        )
        return manifest

    async def _dump(
        self, manifest: BackupManifest, partial: Path, progress: Progress | None
    ) -> None:
        conn = await self.database.connect(timeout=CONNECT_TIMEOUT_S)
        try:
            major, manifest.server_version = await _server_major(conn)
            tools = await asyncio.to_thread(self._tools, major)
            manifest.pg_dump_version = tools.version
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
                tables = [row[0] for row in await conn.fetch(TABLES)]
                create_private(partial)
                args = [
                    tools.pg_dump,
                    "--format=custom",
                    f"--snapshot={snapshot}",
                    f"--file={partial}",
                    "--no-password",
                ]
                on_line = None
                if progress is not None:
                    args.append("--verbose")
                    on_line = _table_progress("dumping contents of table", len(tables), progress)
                with self._environment() as env:
                    # Counted while pg_dump copies, in the snapshot it imported.
                    await _together(
                        run_tool(args, env, on_line), self._count(conn, manifest, tables)
                    )
        finally:
            await _close(conn)
        # A thread cannot be stopped: wait for it even when cancelled, so the failure path
        # never races a rename of the dump into place.
        sealing = asyncio.ensure_future(
            asyncio.to_thread(_seal, partial, self.store.dump_path(manifest))
        )
        try:
            manifest.size_bytes, manifest.sha256 = await asyncio.shield(sealing)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await sealing
            raise

    async def _count(
        self, conn: asyncpg.Connection, manifest: BackupManifest, tables: Sequence[str]
    ) -> None:
        manifest.alembic_revision = await _revision(conn, self.spec.version_table)
        manifest.row_counts = await _row_counts(conn, tables)

    def _save(self, manifest: BackupManifest) -> None:
        try:
            self.store.save(manifest)
        except OSError as exc:
            msg = f"cannot write the manifest of backup {manifest.id}: {_describe(exc)}"
            raise BackupError(msg) from None

    # ---- verify ----------------------------------------------------------------------

    async def _check_digest(self, manifest: BackupManifest) -> str | None:
        """Why the dump's file does not match its manifest, or None when it does."""
        path = self.store.dump_path(manifest)
        try:
            size, digest = await asyncio.to_thread(_digest, path)
        except FileNotFoundError:
            return f"the dump file {path.name} is missing"
        if digest != manifest.sha256 or size != manifest.size_bytes:
            return (
                f"the dump's sha256 differs from the manifest's ({size} bytes read, "
                f"{manifest.size_bytes} recorded): the file changed after the backup"
            )
        return None

    def _archive_tools(self, manifest: BackupManifest) -> PgTools:
        major = int((manifest.pg_dump_version or "0").split(".")[0])
        return self._tools(major)

    async def verify(
        self, manifest: BackupManifest, progress: Progress | None = None
    ) -> BackupManifest:
        """Check the sha256 and read the whole archive; record the outcome in the manifest."""
        limit = self.settings.timeout_s
        try:
            async with asyncio.timeout(limit):
                error = await self._read_whole(manifest, progress)
        except TimeoutError:
            error = f"timed out after {limit:g} s (MULTI_DB_BACKUP_TIMEOUT_S)"
        manifest.verification = Verification(checked_at=_now(), passed=error is None, error=error)
        self._save(manifest)
        if error:
            log.error(
                "backup %s of role %s fails verification: %s", manifest.id, self.spec.name, error
            )
        return manifest

    async def _read_whole(self, manifest: BackupManifest, progress: Progress | None) -> str | None:
        error = await self._check_digest(manifest)
        if error is None:
            try:
                tools = await asyncio.to_thread(self._archive_tools, manifest)
                args = [tools.pg_restore, "--file=/dev/null", str(self.store.dump_path(manifest))]
                on_line = None
                if progress is not None:
                    args.append("--verbose")
                    total = len(manifest.row_counts)
                    on_line = _table_progress("processing data for table", total, progress)
                with self._environment() as env:
                    await run_tool(args, env, on_line)
            except (BackupToolError, OSError) as exc:
                error = f"the archive cannot be read whole: {_describe(exc)}"
        return error

    # ---- drill -----------------------------------------------------------------------

    async def drill(
        self, manifest: BackupManifest, progress: Progress | None = None
    ) -> BackupManifest:
        """Restore into a scratch database, compare with the manifest, drop it; record the
        result in the manifest (``last_drill``)."""
        started_at, started = _now(), time.monotonic()
        differences: list[str] = []
        limit = self.settings.timeout_s
        error = await self._check_digest(manifest)
        if error is not None:
            differences.append(error)
        else:
            try:
                async with asyncio.timeout(limit):
                    differences = await self._restore_and_compare(manifest, progress)
            except TimeoutError:
                differences.append(f"timed out after {limit:g} s (MULTI_DB_BACKUP_TIMEOUT_S)")
            except Exception as exc:  # a failed drill is a result to record, whatever failed
                differences.append(f"the restore failed: {_describe(exc)}")
        duration = round(time.monotonic() - started, 3)
        manifest.last_drill = DrillResult(
            drill_id=f"{manifest.id}-{stamp(started_at)}",
            started_at=started_at,
            # From the monotonic clock: a wall-clock step never makes it end before it began.
            finished_at=started_at + timedelta(seconds=duration),
            duration_s=duration,
            passed=not differences,
            differences=differences,
        )
        self._save(manifest)
        if differences:
            log.error(
                "drill of backup %s of role %s failed: %s",
                manifest.id,
                self.spec.name,
                "; ".join(differences[:5]),
            )
        return manifest

    async def _restore_and_compare(
        self, manifest: BackupManifest, progress: Progress | None
    ) -> list[str]:
        scratch = f"{self.scratch_prefix}{manifest.id}"
        admin = await self.database.connect(timeout=CONNECT_TIMEOUT_S)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_identifier(scratch)} WITH (FORCE)")
            try:
                # template0: what an administrator added to template1 is not in the dump.
                await admin.execute(
                    f"CREATE DATABASE {quote_identifier(scratch)} TEMPLATE template0"
                )
            except asyncpg.PostgresError as exc:
                raise BackupError(f"cannot create the scratch database: {describe(exc)}") from None
            try:
                await self._pg_restore(manifest, scratch, ["--no-owner", "--no-acl"], progress)
                restored = await self.database.connect(timeout=CONNECT_TIMEOUT_S, database=scratch)
                try:
                    revision = await _revision(restored, self.spec.version_table)
                    tables = [row[0] for row in await restored.fetch(TABLES)]
                    counts = await _row_counts(restored, tables)
                finally:
                    await _close(restored)
            finally:
                await admin.execute(
                    f"DROP DATABASE IF EXISTS {quote_identifier(scratch)} WITH (FORCE)"
                )
        finally:
            await _close(admin)
        return _differences(manifest, revision, counts)

    async def _pg_restore(
        self,
        manifest: BackupManifest,
        dbname: str,
        options: Sequence[str],
        progress: Progress | None,
    ) -> None:
        tools = await asyncio.to_thread(self._archive_tools, manifest)
        args = [
            tools.pg_restore,
            "--exit-on-error",
            "--no-password",
            f"--dbname={dbname}",
            *options,
            str(self.store.dump_path(manifest)),
        ]
        on_line = None
        if progress is not None:
            args.append("--verbose")
            on_line = _table_progress(
                "processing data for table", len(manifest.row_counts), progress
            )
        with self._environment(dbname) as env:
            await run_tool(args, env, on_line)

    # ---- restore (command line only) -----------------------------------------------

    async def restore(
        self,
        manifest: BackupManifest,
        into: str,
        *,
        force: bool = False,
        progress: Progress | None = None,
    ) -> None:
        """Restore into database ``into`` (created when missing), in one transaction.
        Refuse a database that holds tables unless ``force``, saying what is there."""
        name = _database_name(into)
        error = await self._check_digest(manifest)
        if error is not None:
            raise BackupError(f"refusing to restore: {error}")
        admin = await self.database.connect(timeout=CONNECT_TIMEOUT_S)
        try:
            exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await admin.execute(f"CREATE DATABASE {quote_identifier(name)} TEMPLATE template0")
        finally:
            await _close(admin)
        if exists:
            target = await self.database.connect(timeout=CONNECT_TIMEOUT_S, database=into)
            try:
                tables = [row[0] for row in await target.fetch(TABLES)]
                present = await _row_counts(target, tables[:20]) if tables else {}
            finally:
                await _close(target)
            if tables and not force:
                shown = ", ".join(f"{name} ({rows} rows)" for name, rows in present.items())
                more = (
                    f" and {len(tables) - len(present)} more" if len(tables) > len(present) else ""
                )
                msg = (
                    f"database {into!r} is not empty: it holds {len(tables)} tables "
                    f"({shown}{more}); restoring would overwrite them. Use --force to replace them"
                )
                raise BackupError(msg)
        options = ["--no-owner", "--no-acl", "--single-transaction"]
        if exists:
            options += ["--clean", "--if-exists"]
        try:
            await self._pg_restore(manifest, name, options, progress)
        except BaseException:
            if not exists:  # the restore was all-or-nothing: so is the database it made
                await self._drop(name)
            raise

    async def _drop(self, name: str) -> None:
        with contextlib.suppress(Exception):
            admin = await self.database.connect(timeout=CONNECT_TIMEOUT_S)
            try:
                await admin.execute(
                    f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)"
                )
            finally:
                await _close(admin)

    # ---- housekeeping ----------------------------------------------------------------

    def clean_up(self) -> list[str]:
        """Mark runs that died ``failed`` and remove their partial files. Only the holder of
        the role's lock may call this: no run is then alive. Raise :class:`BackupError`
        when the folder cannot be written."""
        done = []
        try:
            for manifest in self.store.manifests():
                if manifest.status == "running":
                    manifest.status = "failed"
                    manifest.error = "interrupted: the process running it stopped"
                    manifest.finished_at = manifest.finished_at or _now()
                    self.store.save(manifest)
                    done.append(manifest.id)
            for leftover in self.store.leftovers():
                leftover.unlink(missing_ok=True)
        except OSError as exc:
            msg = f"cannot write to the backup folder {self.store.folder}: {_describe(exc)}"
            raise BackupError(msg) from None
        if done:
            log.warning(
                "role %s: backups %s were interrupted (their process stopped): marked failed",
                self.spec.name,
                ", ".join(done),
            )
        return done

    def prune(self, now: datetime | None = None) -> list[BackupManifest]:
        """Delete backups beyond the role's count or age; never the newest verified one,
        nor the newest good one, nor a running one. Failed records: the last
        ``FAILED_KEEP`` and those within the age limit are kept."""
        now = now or _now()
        manifests = self.store.manifests()
        good = [m for m in manifests if m.status == "ok"]
        verified = next((m for m in good if m.verified), None)
        keep = {m.id for m in (verified, good[0] if good else None) if m is not None}
        count, age = self.policy.keep_count, self.policy.keep_age_s
        doomed = []
        for index, manifest in enumerate(good):
            old = age is not None and (now - manifest.started_at).total_seconds() > age
            if manifest.id not in keep and ((count is not None and index >= count) or old):
                doomed.append(manifest)
        failed = [m for m in manifests if m.status == "failed"]
        for index, manifest in enumerate(failed):
            old = age is not None and (now - manifest.started_at).total_seconds() > age
            if index >= FAILED_KEEP or old:
                doomed.append(manifest)
        for manifest in doomed:
            self.store.delete(manifest)
        return doomed


def _database_name(name: str) -> str:
    """``name`` if it can only mean a database's name: libpq reads a ``--dbname`` with ``=``
    or a URI prefix as a connection string, which could name another database."""
    plain = (
        name
        and name == name.strip()
        and "=" not in name
        and "\x00" not in name
        and not name.startswith(("postgresql:", "postgres:"))
        and len(name.encode()) <= 63
    )
    if not plain:
        msg = (
            f"{name!r} is not a usable database name: a plain name of at most 63 bytes, "
            "without '=' or a URI prefix"
        )
        raise BackupError(msg)
    return name


def _table_progress(marker: str, total: int, progress: Progress) -> Callable[[str], None]:
    done = 0

    def on_line(line: str) -> None:
        nonlocal done
        if marker in line:
            done += 1
            progress(min(done, total), total, line.rsplit(" ", 1)[-1].strip('"'))

    return on_line


def _differences(
    manifest: BackupManifest, revision: str | None, counts: dict[str, int]
) -> list[str]:
    found = []
    if revision != manifest.alembic_revision:
        found.append(
            f"alembic revision: {manifest.alembic_revision} in the manifest, {revision} restored"
        )
    for table, rows in manifest.row_counts.items():
        if table not in counts:
            found.append(f"{table}: missing after the restore")
        elif counts[table] != rows:
            found.append(f"{table}: {rows} rows in the manifest, {counts[table]} restored")
    found.extend(
        f"{table}: restored but not in the manifest"
        for table in counts
        if table not in manifest.row_counts
    )
    return found
