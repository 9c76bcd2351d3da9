"""The whole split: check, migrate, copy, verify, (drop), report.

Nothing changes anywhere until every check passed (tables present, columns compatible,
targets empty unless resuming); a dry run stops there. The source is only read, in one
snapshot, except that ``drop_source_tables`` drops the copied tables in one transaction
once every one of them verified, and only if, locked, they still hold what was verified.
A :class:`SplitError` (bad input) is raised only before anything changed; from the
targets' migrations on, a failure is a :class:`SplitFailedError` or the error itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy.engine import URL

from multidb import migrations
from multidb.errors import CONNECTION_ERRORS, describe
from multidb.partitions import quote_identifier
from multidb.plugins import get_plugin_manager
from multidb.roles import RoleSpec
from multidb.settings import DatabaseSettings
from multidb.split import copy, plan, verify
from multidb.split.errors import SplitError, SplitFailedError
from multidb.split.source import SESSION_SETTINGS, connect_source, display

# (phase, table, rows done, rows expected or None) as work advances.
Progress = Callable[[str, str, int, int | None], None]
JOBS = 2
# How long dropping the source tables waits for the other sessions using them: the wait
# holds up every later query of those tables.
DROP_LOCK_TIMEOUT_S = 10


@dataclass(frozen=True)
class SplitOptions:
    source: URL
    dry_run: bool = False
    resume: bool = False
    drop_source_tables: bool = False
    batch_rows: int = copy.BATCH_ROWS
    jobs: int = JOBS


@dataclass
class TableReport:
    role: str
    table: str
    rows: int = 0  # copied by this run (dry run: rows in the source)
    bytes: int = 0  # of COPY data moved (dry run: the source table's size on disk)
    copy_s: float = 0.0
    verify_s: float = 0.0
    source: verify.Checksum | None = None
    target: verify.Checksum | None = None
    resumed: bool = False
    partitions_created: int = 0

    @property
    def name(self) -> str:
        return f"{self.role}.{self.table}"

    @property
    def verified(self) -> bool:
        return self.source is not None and self.source == self.target


@dataclass
class SplitReport:
    source: str
    dry_run: bool
    tables: list[TableReport] = field(default_factory=list)
    left_alone: dict[str, str] = field(default_factory=dict)  # role -> why
    migrated: list[str] = field(default_factory=list)
    copy_s: float = 0.0
    verify_s: float = 0.0
    total_s: float = 0.0
    dropped: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return all(table.verified for table in self.tables)

    @property
    def rows(self) -> int:
        return sum(table.rows for table in self.tables)

    @property
    def bytes(self) -> int:
        return sum(table.bytes for table in self.tables)


async def _connect_target(role: str, database: DatabaseSettings) -> asyncpg.Connection:
    try:
        return await database.connect(server_settings=SESSION_SETTINGS, timeout=10)
    except (TimeoutError, *CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
        msg = f"{role}: cannot connect to its database {database.display_url}: {describe(exc)}"
        raise SplitError(msg) from None


class _Connections:
    """Target connections by role, opened on first use and all closed at the end."""

    def __init__(self, databases: Mapping[str, DatabaseSettings]) -> None:
        self.databases = databases
        self.open: dict[str, asyncpg.Connection] = {}

    async def get(self, role: str) -> asyncpg.Connection:
        if role not in self.open:
            self.open[role] = await _connect_target(role, self.databases[role])
        return self.open[role]

    async def close(self) -> None:
        for conn in self.open.values():
            with contextlib.suppress(Exception):
                await conn.close()
        self.open.clear()


@contextlib.asynccontextmanager
async def _source_pool(
    url: URL, snapshot: str, size: int
) -> AsyncIterator[asyncio.Queue[asyncpg.Connection]]:
    """``size`` source connections, each in the split's snapshot, to take turns with."""
    pool: asyncio.Queue[asyncpg.Connection] = asyncio.Queue()
    opened = []
    try:
        for _ in range(size):
            conn = await connect_source(url)
            opened.append(conn)
            await copy.begin_snapshot(conn, snapshot)
            pool.put_nowait(conn)
        yield pool
    finally:
        for conn in opened:
            with contextlib.suppress(Exception):
                await conn.close()


async def _each(
    items: list[TablePlanAndReport],
    jobs: int,
    work: Callable[[TablePlanAndReport], Awaitable[None]],
) -> None:
    """Run ``work`` on every item, ``jobs`` at a time; the first failure cancels the rest."""
    queue: asyncio.Queue[TablePlanAndReport] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            await work(queue.get_nowait())

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(jobs, len(items)))):
                group.create_task(worker())
    except BaseExceptionGroup as failed:  # the first failure, as if there were one worker
        raise failed.exceptions[0] from None


TablePlanAndReport = tuple[plan.TablePlan, TableReport]


async def _check(
    source: asyncpg.Connection,
    roles: Mapping[str, RoleSpec],
    splits: list[plan.RolePlan],
    targets: _Connections,
    *,
    resume: bool,
) -> list[plan.TablePlan]:
    """Every check, reading only: :class:`SplitError` for the first thing that is wrong."""
    missing = [
        f"{role.role}.{table}"
        for role in splits
        for table in role.tables
        if not await source.fetchval("SELECT to_regclass($1) IS NOT NULL", quote_identifier(table))
    ]
    if missing:
        msg = f"the source lacks the expected tables: {', '.join(missing)}"
        raise SplitError(msg)
    plans: list[plan.TablePlan] = []
    not_empty: list[str] = []
    for role in splits:
        target = await targets.get(role.role)
        metadata = roles[role.role].metadata
        for table in role.tables:
            source_columns = await plan.read_columns(source, table)
            assert source_columns is not None  # noqa: S101 - checked above, same snapshot
            live = await plan.read_columns(target, table)
            if live is None:  # not migrated yet: what the role's migrations will create
                target_columns = plan.model_columns(metadata.tables[table])
                partition_key = plan.model_partition_key(metadata.tables[table])
            else:
                target_columns = live
                partition_key = await plan.read_partition_key(target, table)
                if await target.fetchval(f"SELECT EXISTS (SELECT FROM {quote_identifier(table)})"):
                    not_empty.append(f"{role.role}.{table}")
            checked = plan.plan_table(
                role.role,
                table,
                source=source_columns,
                key=await plan.read_primary_key(source, table),
                target=target_columns,
                partition_key=partition_key,
            )
            estimate = await source.fetchrow(
                "SELECT reltuples::bigint, pg_total_relation_size(oid) FROM pg_class "
                "WHERE oid = to_regclass($1)",
                quote_identifier(table),
            )
            assert estimate is not None  # noqa: S101
            plans.append(
                dataclasses.replace(
                    checked,
                    estimated_rows=estimate[0] if estimate[0] >= 0 else None,
                    source_bytes=estimate[1],
                )
            )
    if not_empty and not resume:
        shown = ", ".join(not_empty[:5]) + (
            f" and {len(not_empty) - 5} more" if len(not_empty) > 5 else ""
        )
        msg = f"target tables are not empty: {shown} (--resume continues an interrupted split)"
        raise SplitError(msg)
    return plans


async def split(
    options: SplitOptions,
    roles: Mapping[str, RoleSpec],
    databases: Mapping[str, DatabaseSettings],
    progress: Progress | None = None,
) -> SplitReport:
    """Split the source into the role databases as ``options`` say; the report.

    :class:`SplitError` when the input is wrong (then nothing changed anywhere);
    :class:`SplitFailedError` for what went wrong once the targets began to change.
    """
    started = time.monotonic()
    report = SplitReport(source=display(options.source), dry_run=options.dry_run)
    role_plans = plan.role_plans(options.source, roles, databases)
    for role in role_plans:
        if role.left_alone is not None:
            report.left_alone[role.role] = role.left_alone
    splits = [role for role in role_plans if role.left_alone is None]
    if not splits:
        msg = "nothing to split: every configured role's database is the source itself"
        raise SplitError(msg)
    say = progress or (lambda *_: None)

    holder = await connect_source(options.source)
    targets = _Connections({role.role: role.database for role in splits})
    try:
        snapshot = await copy.begin_snapshot(holder)
        plans = await _check(holder, roles, splits, targets, resume=options.resume)
        items = [(p, TableReport(p.role, p.table)) for p in plans]
        report.tables = [item[1] for item in items]
        if options.dry_run:
            for table_plan, table_report in items:
                say("count", table_plan.name, 0, None)
                table_report.rows = await holder.fetchval(
                    f"SELECT count(*) FROM {table_plan.quoted}"
                )
                table_report.bytes = table_plan.source_bytes
            report.total_s = time.monotonic() - started
            return report

        await targets.close()  # the migrations may need the tables to themselves
        try:  # from here on something changed: a SplitError is no longer bad input
            for role in splits:
                say("migrate", role.role, 0, None)
                await asyncio.to_thread(migrations.upgrade, roles[role.role], "head", role.database)
                report.migrated.append(role.role)
            # Again, now against the migrated tables (the checks above read the models).
            plans = await _check(holder, roles, splits, targets, resume=options.resume)
            items = [(p, item[1]) for p, item in zip(plans, items, strict=True)]
            async with _source_pool(options.source, snapshot, options.jobs) as pool:
                report.copy_s = await _copy_all(items, pool, targets.databases, options, say)
                report.verify_s = await _verify_all(items, pool, targets.databases, options, say)
            if report.verified:
                for role in splits:
                    await _rows_arrived(role.role, targets)
            if options.drop_source_tables and report.verified:
                await holder.execute("ROLLBACK")  # the snapshot's read-only transaction
                await _drop_source_tables(holder, items)
                report.dropped = [p.table for p, _ in items]
        except SplitError as exc:  # found once the targets began to change: not bad input
            msg = (
                f"{exc}; the targets may hold part of the copy (the source was not changed): "
                "fix that, then run again with --resume"
            )
            raise SplitFailedError(msg) from None
    finally:
        await targets.close()
        with contextlib.suppress(Exception):
            await holder.close()
    report.total_s = time.monotonic() - started
    return report


async def _drop_source_tables(holder: asyncpg.Connection, items: list[TablePlanAndReport]) -> None:
    """Drop the copied tables from the source, in one transaction, if they still hold what
    was verified: each one locked against every other session, its checksum computed
    again under the lock, all dropped only when every one equals the verified one
    (:class:`SplitFailedError`, nothing dropped, otherwise)."""
    names = ", ".join(quote_identifier(p.table) for p, _ in items)
    async with holder.transaction(isolation="read_committed"):  # each statement sees the latest
        await holder.execute(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT_S}s'")
        try:
            await holder.execute(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
        except asyncpg.LockNotAvailableError:
            msg = (
                f"could not lock the copied tables in the source within {DROP_LOCK_TIMEOUT_S} s"
                " (other sessions use them): nothing was dropped; stop their writers, then run"
                " again with --resume --drop-source-tables"
            )
            raise SplitFailedError(msg) from None
        for table_plan, table_report in items:
            now = await verify.checksum(holder, table_plan.table, table_plan.columns)
            if now != table_report.source:
                msg = (
                    f"the source changed after its snapshot (table {table_plan.name}): nothing"
                    " was dropped; stop its writers, then run again with --resume"
                    " --drop-source-tables (--resume copies only rows after the greatest key"
                    " already copied: if rows were updated or deleted in place, empty the"
                    " target tables and split again instead)"
                )
                raise SplitFailedError(msg)
        await holder.execute(f"DROP TABLE {names}")


async def _rows_arrived(role: str, targets: _Connections) -> None:
    """Let the role rebuild what it derives from its rows (the analytics rollups)."""
    conn = await targets.get(role)
    for result in get_plugin_manager().hook.multidb_rows_arrived(role=role, connection=conn):
        if inspect.isawaitable(result):
            await result


async def _copy_all(
    items: list[TablePlanAndReport],
    pool: asyncio.Queue[asyncpg.Connection],
    databases: Mapping[str, DatabaseSettings],
    options: SplitOptions,
    say: Progress,
) -> float:
    started = time.monotonic()
    # Largest first, so the workers finish together.
    ordered = sorted(items, key=lambda item: -item[0].source_bytes)

    async def one(item: TablePlanAndReport) -> None:
        table_plan, table_report = item
        source = await pool.get()
        target = await _connect_target(table_plan.role, databases[table_plan.role])
        try:
            table_report.partitions_created = len(
                await copy.ensure_partitions(source, target, table_plan)
            )
            say("copy", table_plan.name, 0, table_plan.estimated_rows)
            copied = await copy.copy_table(
                source,
                target,
                table_plan,
                resume=options.resume,
                batch_rows=options.batch_rows,
                on_batch=lambda p, rows: say("copy", p.name, rows, p.estimated_rows),
            )
            await copy.move_sequences(source, target, table_plan)
        finally:
            pool.put_nowait(source)
            await target.close()
        table_report.rows = copied.rows
        table_report.bytes = copied.bytes
        table_report.copy_s = copied.seconds
        table_report.resumed = copied.resumed_after is not None

    await _each(ordered, options.jobs, one)
    return time.monotonic() - started


async def _verify_all(
    items: list[TablePlanAndReport],
    pool: asyncio.Queue[asyncpg.Connection],
    databases: Mapping[str, DatabaseSettings],
    options: SplitOptions,
    say: Progress,
) -> float:
    started = time.monotonic()

    async def one(item: TablePlanAndReport) -> None:
        table_plan, table_report = item
        say("verify", table_plan.name, 0, None)
        source = await pool.get()
        target = await _connect_target(table_plan.role, databases[table_plan.role])
        began = time.monotonic()
        try:
            table_report.source, table_report.target = await asyncio.gather(
                verify.checksum(source, table_plan.table, table_plan.columns),
                verify.checksum(target, table_plan.table, table_plan.columns, table_plan.casts),
            )
        finally:
            pool.put_nowait(source)
            await target.close()
        table_report.verify_s = time.monotonic() - began

    await _each(sorted(items, key=lambda item: -item[0].source_bytes), options.jobs, one)
    return time.monotonic() - started
