"""One run's batches: rows leave the default database (S) for the archive database (T),
and come back, with no transaction spanning both and nothing lost or duplicated.

One archive batch:

1. S, ``REPEATABLE READ``: read the batch whole (row, dependents, links), each row's
   checksum (md5 over the canonical ``jsonb`` text of all three) and its version (the
   ``xmin`` and place of the row, of each dependent and of each link).
2. T, one transaction: upsert the rows on ``original_id``; the archive's own checksums of
   the rows as stored (``RETURNING``) are compared with the default's, row for row (a
   difference rolls the batch back and stops the run); the ledger entry (``copied``, the
   ids, the checksum) is written. Commit.
3. S, ``REPEATABLE READ``: rows whose version changed since 1, or that something now
   holds back, stay. For the rest, the links are cleared and the dependents deleted by the
   mover itself (deepest first), then the rows. Anything committed after this snapshot
   that touches them (an update, a new or deleted dependent, a changed link) makes one of
   those statements, or a foreign key action they fire, fail with a serialization error:
   PostgreSQL's foreign key actions check for rows the snapshot cannot see. The
   transaction rolls back and step 3 starts again. So what is deleted is exactly what was
   copied.
4. T: remove the copies of the rows that stayed; the ledger entry becomes ``done``.

A run that dies anywhere leaves the ledger entry ``copied``. The next run (under the same
lock, so nothing else is moving) first ends any session of the mover's login left in S
(a COMMIT may still be in flight there), then looks at each id: still in S means the
delete never committed, so its copy goes; gone from S means the copy is the row now, so
it stays.

Unarchive mirrors it: ledger ``copying`` in T first, then the rows inserted into S with
their dependents and links (checked against what the archive kept before commit), then
the copies deleted from T and the entry ``done``. The recovery of a ``copying`` entry:
ids back in S lose their archive copy, ids not in S keep it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import msgspec

from multidb.errors import describe
from multidb.settings import DatabaseSettings
from multidb_archive.mover import keys, login, records
from multidb_archive.mover.catalog import CATALOG
from multidb_archive.mover.errors import MoverError
from multidb_archive.mover.settings import ArchiveSettings
from multidb_archive.mover.wire import RunReport, RunRequest

log = logging.getLogger("multidb.archive.mover")

Progress = Callable[[str, int], None]

SESSION = {"TimeZone": "UTC", "application_name": "multidb-archive-mover"}
# A statement of the mover that waits longer than this on a lock gives up: its batch is
# tried again (or left for the next run), never half-applied.
LOCK_TIMEOUT = "30s"
STATEMENT_TIMEOUT = "10min"
CONNECT_TIMEOUT_S = 10.0
DELETE_ATTEMPTS = 4
# A model whose rows hold each other back (media and their derived media) is passed over
# again while a pass moved something, at most this many times per run.
MAX_PASSES = 20
LAG_CHECK_EVERY_S = 1.0
LEFTOVER_WAIT_MS = 10_000
CURSOR_ROWS = 250
MAX_BATCH_BYTES = 32 * 1024 * 1024
SAVE_EVERY_S = 1.0
LAG_SQL = """
SELECT coalesce(application_name, '') || '@' || coalesce(host(client_addr), 'local') AS replica,
       extract(epoch FROM replay_lag) * 1000 AS lag_ms
FROM pg_stat_replication WHERE replay_lag IS NOT NULL ORDER BY replay_lag DESC LIMIT 1
"""


class StopRunError(Exception):
    """The run stops where it is, for the reason given (the state is ``stopped``)."""


def _batch_checksum(checksums: Sequence[str]) -> str:
    return hashlib.md5(",".join(checksums).encode(), usedforsecurity=False).hexdigest()


class ReadAhead:
    """The next item of ``source`` fetched while the caller works on the current one."""

    def __init__(self, source: AsyncGenerator[list[asyncpg.Record], None]) -> None:
        self._source = source
        self._next: asyncio.Task[list[asyncpg.Record] | None] | None = self._fetch()

    def _fetch(self) -> asyncio.Task[list[asyncpg.Record] | None]:
        async def one() -> list[asyncpg.Record] | None:
            return await anext(self._source, None)

        return asyncio.create_task(one())

    async def next(self) -> list[asyncpg.Record] | None:
        if self._next is None:
            return None
        item = await self._next
        self._next = self._fetch() if item is not None else None
        return item

    async def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
            with contextlib.suppress(BaseException):
                await self._next
            self._next = None
        with contextlib.suppress(BaseException):
            await self._source.aclose()


class Run:
    """One run's connections and state; the Mover (multidb_archive.mover.engine) starts
    it under the lock and saves its report."""

    def __init__(
        self,
        *,
        source: DatabaseSettings,
        settings: ArchiveSettings,
        target: asyncpg.Connection,
        report: RunReport,
        request: RunRequest,
        save: Callable[[], Awaitable[None]],
        progress: Progress | None,
    ) -> None:
        self.database = source
        self.settings = settings
        self.target = target
        self.report = report
        self.request = request
        self.save = save
        self.progress = progress
        self.admin: asyncpg.Connection | None = None
        self.source: asyncpg.Connection | None = None
        self.reader: asyncpg.Connection | None = None
        self.plans: dict[str, keys.ModelKeys] = {}
        self._lag_checked = 0.0
        self._saved = time.monotonic()

    async def connect(self) -> None:
        database = self.database
        try:
            admin = await asyncio.wait_for(
                database.connect(server_settings=SESSION), CONNECT_TIMEOUT_S
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise MoverError(f"database 'default' is unavailable: {describe(exc)}") from None
        self.admin = admin
        found, tables = await keys.load(admin)
        try:
            self.plans = {
                model: keys.plan(entry, found, tables) for model, entry in CATALOG.items()
            }
        except keys.UnsupportedTableError as exc:
            raise MoverError(str(exc)) from None
        hidden = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_replication WHERE state IS NULL"
        )
        if hidden:
            log.warning(
                "archive run %s: the default's login cannot read its replicas' lag "
                "(it needs pg_read_all_stats), so the run will not pause for a lagging one",
                self.report.id,
            )
        account = await login.provision(admin, database, list(self.plans.values()))
        await self._end_leftovers(account.username)
        settings = {
            **SESSION,
            "lock_timeout": LOCK_TIMEOUT,
            "statement_timeout": STATEMENT_TIMEOUT,
        }
        for name in ("source", "reader"):
            conn = await asyncio.wait_for(
                database.connect(
                    user=account.username, password=account.password, server_settings=settings
                ),
                CONNECT_TIMEOUT_S,
            )
            setattr(self, name, conn)
        await self.target.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")

    async def _end_leftovers(self, username: str) -> None:
        """End any session of the mover's login still open in the default database: with
        the lock ours, it belongs to a mover that died, maybe in the middle of a COMMIT
        (waiting for a synchronous standby, say). Recovery must read what that commit did,
        so it waits until the session is gone, and with it the question."""
        if self.admin is None:
            return
        ended = await self.admin.fetch(
            "SELECT pid, pg_terminate_backend(pid, $2) AS gone FROM pg_stat_activity "
            "WHERE usename = $1 AND pid <> pg_backend_pid()",
            username,
            LEFTOVER_WAIT_MS,
        )
        if any(not row["gone"] for row in ended):
            msg = "a session a dead mover left in the default database would not end; try again"
            raise MoverError(msg)

    async def close(self) -> None:
        for conn in (self.reader, self.source, self.admin):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 10)

    def _s(self) -> asyncpg.Connection:
        if self.source is None:
            raise MoverError("the run is not connected to the default database")
        return self.source

    def _r(self) -> asyncpg.Connection:
        if self.reader is None:
            raise MoverError("the run is not connected to the default database")
        return self.reader

    # ---- recovery ----------------------------------------------------------------------

    async def recover(self) -> None:
        """Close the ledger entries a dead run left open (see the module's docstring)."""
        rows = await self.target.fetch(
            "SELECT id, direction, model, ids FROM archive_batches "
            "WHERE state IN ('copied', 'copying') ORDER BY id"
        )
        for row in rows:
            entry = CATALOG.get(row["model"])
            if entry is None:
                continue
            present = {
                r["id"]
                for r in await self._s().fetch(
                    f"SELECT id FROM {keys.quote(entry.source_table)} WHERE id = ANY($1::bigint[])",
                    row["ids"],
                )
            }
            async with self.target.transaction():
                if present:
                    await self.target.execute(
                        f"DELETE FROM {keys.quote(entry.archive_table)} "
                        "WHERE original_id = ANY($1::bigint[])",
                        sorted(present),
                    )
                await self.target.execute(
                    "UPDATE archive_batches SET state = 'recovered', updated_at = now() "
                    "WHERE id = $1",
                    row["id"],
                )
            log.info(
                "archive: closed a %s batch of %d %s rows a dead run left open "
                "(%d still in default)",
                row["direction"],
                len(row["ids"]),
                row["model"],
                len(present),
            )

    # ---- archive -----------------------------------------------------------------------

    def _selection(self, model: str, plan: keys.ModelKeys) -> tuple[str, list[Any], str]:
        """WHERE clause over ``r`` choosing the model's rows, its arguments (from $2), and
        the reason written beside each archived row."""
        ids = (self.request.ids or {}).get(model)
        if ids is not None:
            return "r.id = ANY($2::bigint[])", [sorted(set(ids))], "by id"
        policy = self.settings.policies[model]
        where = f"r.{keys.quote(policy.column)} < now() - make_interval(secs => $2::float8)"
        return where, [policy.age_s], f"policy: {policy.describe()}"

    async def _count_held(
        self, model: str, plan: keys.ModelKeys, where: str, args: list[Any]
    ) -> None:
        held = self.report.models[model].held_back
        held.clear()
        table = keys.quote(plan.entry.source_table)
        for index, path in enumerate(plan.holds):
            count = await self._s().fetchval(
                f"SELECT count(*) FROM {table} r WHERE ({where.replace('$2', '$1')}) "
                f"AND EXISTS (SELECT 1 FROM {path.rows_sql('h')})",
                *args,
            )
            if count:
                reason = records.hold_reason(plan, index)
                held[reason] = held.get(reason, 0) + count

    async def archive_model(self, model: str) -> None:
        plan = self.plans[model]
        entry = plan.entry
        where, args, reason = self._selection(model, plan)
        table = keys.quote(entry.source_table)
        candidates = (
            f"SELECT r.id FROM {table} r WHERE ({where}) AND NOT ({records.held_sql(plan)}) "
            f"AND r.id > $1 ORDER BY r.id LIMIT {int(self.settings.batch_size)}"
        )
        record = records.record_sql(plan)
        passes = 1 if self.report.dry_run or not plan.holds else MAX_PASSES
        for _ in range(passes):
            moved_in_pass = 0
            reading = self._read_ahead(candidates, record, args)
            try:
                while (batch := await reading.next()) is not None:
                    await self._check_lag()
                    if self.report.dry_run:
                        self._count(model, len(batch), sum(row["size"] for row in batch))
                        continue
                    moved_in_pass += await self._archive_batch(model, plan, batch, reason)
            finally:
                await reading.close()
            if moved_in_pass == 0:
                break
        await self._count_held(model, plan, where, args)

    def _read_ahead(self, candidates: str, record: str, args: list[Any]) -> ReadAhead:
        """The batches of one keyset pass, each read (on a connection of its own) while
        the one before is copied and deleted: the two databases work at the same time."""

        async def batches() -> AsyncGenerator[list[asyncpg.Record], None]:
            reader = self._r()
            last = 0
            while True:
                ids = [row["id"] for row in await reader.fetch(candidates, last, *args)]
                if not ids:
                    return
                last = ids[-1]
                # Rows come off a cursor and a batch ends at MAX_BATCH_BYTES too: a row
                # travels with all its dependents and links, so rows alone bound nothing.
                pending: list[asyncpg.Record] = []
                size = 0
                async with reader.transaction(isolation="repeatable_read", readonly=True):
                    cursor = await reader.cursor(record, ids)
                    while rows := await cursor.fetch(CURSOR_ROWS):
                        pending.extend(rows)
                        size += sum(row["size"] for row in rows)
                        if size >= MAX_BATCH_BYTES:
                            yield pending
                            pending, size = [], 0
                if pending:
                    yield pending

        return ReadAhead(batches())

    def _count(self, model: str, rows: int, size: int) -> None:
        found = self.report.models[model]
        found.rows += rows
        found.bytes += size
        found.batches += 1
        if self.progress is not None:
            self.progress(model, found.rows)

    async def _archive_batch(
        self, model: str, plan: keys.ModelKeys, batch: Sequence[asyncpg.Record], reason: str
    ) -> int:
        entry = plan.entry
        ids = [row["id"] for row in batch]
        checksums = {row["id"]: row["checksum"] for row in batch}
        archived_by = self.report.requested_by or self.report.trigger
        columns = list(entry.columns)
        names = "".join(f", {keys.quote(c)}" for c in columns)
        extracted = [[row[f"c_{c}"] for row in batch] for c in columns]
        arrays = "".join(f", ${i + 8}::text[]" for i in range(len(columns)))
        aliases = "".join(f", x{i}" for i in range(len(columns)))
        updates = ", ".join(
            f"{keys.quote(c)} = EXCLUDED.{keys.quote(c)}"
            for c in [*columns, "data", "dependents", "links", "checksum", "reason", "archived_by"]
        )
        # $1 ids, $2 rows, $3 dependents, $4 links, $5 checksums, $6 by, $7 why, $8... columns
        insert = (
            f"INSERT INTO {keys.quote(entry.archive_table)} (original_id, data, dependents, "
            f"links, checksum, archived_by, reason{names}) "
            f"SELECT o, d::jsonb, dep::jsonb, l::jsonb, c, $6, $7{aliases} "
            f"FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[]{arrays}) "
            f"AS t(o, d, dep, l, c{aliases}) "
            f"ON CONFLICT (original_id) DO UPDATE SET {updates}, archived_at = now()"
        )
        batch_checksum = _batch_checksum([checksums[i] for i in ids])
        async with self.target.transaction():
            # Step 3 in the same statement: the archive's own checksum of each row as stored
            # (its jsonb, parsed and written), against the one the default computed.
            stored = await self.target.fetch(
                f"{insert} RETURNING original_id, {records.CHECKSUM} AS checksum",
                ids,
                [row["data"] for row in batch],
                [row["dependents"] for row in batch],
                [row["links"] for row in batch],
                [checksums[i] for i in ids],
                archived_by,
                reason,
                *extracted,
            )
            if {row["original_id"]: row["checksum"] for row in stored} != checksums:
                # Not a caller's mistake and not a crash: nothing is kept, the run stops.
                msg = f"{model}: the archive's copy of a batch did not match the rows read"
                raise MoverError(msg)
            ledger = await self.target.fetchval(
                "INSERT INTO archive_batches (run_id, direction, model, ids, checksum, state, "
                "rows) VALUES ($1, 'archive', $2, $3, $4, 'copied', $5) RETURNING id",
                self.report.id,
                model,
                ids,
                batch_checksum,
                len(ids),
            )
        kept, deleted = await self._delete(plan, ids, {row["id"]: row["version"] for row in batch})
        await self._close_batch(entry, ledger, ids, kept)
        found = self.report.models[model]
        found.changed += len(kept)
        size = sum(row["size"] for row in batch if row["id"] in deleted)
        self._count(model, len(deleted), size)
        return len(deleted)

    async def _delete(
        self, plan: keys.ModelKeys, ids: list[int], versions: dict[int, str]
    ) -> tuple[list[int], set[int]]:
        """Step 4: (rows left in place, rows deleted). A row whose version (the xmin of it,
        its dependents and its links) differs from the one read in step 1 was written
        since: its copy is not what it is now, so it stays."""
        table = keys.quote(plan.entry.source_table)
        check = (
            f"SELECT r.id, {records.version_sql(plan)} AS version FROM {table} r "
            f"WHERE r.id = ANY($1::bigint[]) AND NOT ({records.held_sql(plan)})"
        )
        for _attempt in range(DELETE_ATTEMPTS):
            try:
                async with self._s().transaction(isolation="repeatable_read"):
                    now = {row["id"]: row["version"] for row in await self._s().fetch(check, ids)}
                    same = [i for i in ids if now.get(i) == versions[i]]
                    if same:
                        await self._take_apart(plan, same)
                        status = await self._s().execute(
                            f"DELETE FROM {table} WHERE id = ANY($1::bigint[])", same
                        )
                        if int(status.split()[-1]) != len(same):
                            raise asyncpg.SerializationError("rows went away")
                    gone = set(same)
                    return [i for i in ids if i not in gone], gone
            except (
                asyncpg.SerializationError,
                asyncpg.DeadlockDetectedError,
                asyncpg.LockNotAvailableError,
                asyncpg.ForeignKeyViolationError,
            ):
                continue  # something else touched the batch: a new snapshot, a new look
        return list(ids), set()

    async def _take_apart(self, plan: keys.ModelKeys, ids: list[int]) -> None:
        """Clear the links and delete the dependents ourselves, deepest first, before the
        rows: in this snapshot, a link or dependent deleted or changed since it began is a
        serialization failure here, where PostgreSQL's own ON DELETE actions (which read
        the latest rows) would pass over it and leave the archive holding a row the
        application had deleted."""
        root = keys.quote(plan.entry.source_table)
        for path in plan.links:
            table, column = keys.quote(path.table), keys.quote(path.steps[-1].column)
            await self._s().execute(
                f"UPDATE {table} t SET {column} = NULL FROM {root} r "
                f"WHERE r.id = ANY($1::bigint[]) AND t.ctid IN (SELECT l.ctid FROM "
                f"{path.rows_sql('l')})",
                ids,
            )
        for path in reversed(plan.dependents):
            await self._s().execute(
                f"DELETE FROM {keys.quote(path.table)} t USING {root} r "
                f"WHERE r.id = ANY($1::bigint[]) AND t.ctid IN (SELECT d.ctid FROM "
                f"{path.rows_sql('d')})",
                ids,
            )

    async def _close_batch(self, entry: Any, ledger: int, ids: list[int], kept: list[int]) -> None:
        """Step 5: copies of rows that stayed go; the ledger entry is done."""
        async with self.target.transaction():
            if kept:
                await self.target.execute(
                    f"DELETE FROM {keys.quote(entry.archive_table)} "
                    "WHERE original_id = ANY($1::bigint[])",
                    kept,
                )
            await self.target.execute(
                "UPDATE archive_batches SET state = 'done', updated_at = now(), rows = $2 "
                "WHERE id = $1",
                ledger,
                len(ids) - len(kept),
            )

    async def _save_progress(self, *, now: bool = False) -> None:
        """Write the report so far, so another process (the service, while the CLI runs)
        shows the run's progress and why it pauses: at most once a second."""
        if now or time.monotonic() - self._saved >= SAVE_EVERY_S:
            await self.save()
            self._saved = time.monotonic()

    async def _check_lag(self) -> None:
        """Pause while a replica of the default database lags beyond the bound."""
        await self._save_progress()
        now = time.monotonic()
        if now - self._lag_checked < LAG_CHECK_EVERY_S or self.admin is None:
            return
        self._lag_checked = now
        bound = self.settings.max_source_lag_ms
        paused_since: float | None = None
        while True:
            row = await self.admin.fetchrow(LAG_SQL)
            if row is None or row["lag_ms"] is None or float(row["lag_ms"]) <= bound:
                if paused_since is not None:
                    self.report.message = None
                return
            lag = float(row["lag_ms"])
            said = f"replica {row['replica']} lags {lag:.0f} ms (more than {bound} ms)"
            if paused_since is None:
                paused_since = time.monotonic()
                log.info("archive run %s paused: %s", self.report.id, said)
            waited = time.monotonic() - paused_since
            if waited >= self.settings.max_pause_s:
                msg = f"stopped after pausing {waited:.0f} s: {said}"
                raise StopRunError(msg)
            self.report.message = f"paused: {said}"
            await self._save_progress(now=True)
            await asyncio.sleep(LAG_CHECK_EVERY_S)  # a throttle: poll the replica's lag

    # ---- unarchive ---------------------------------------------------------------------

    async def unarchive_model(self, model: str) -> None:
        plan = self.plans[model]
        entry = plan.entry
        archive = keys.quote(entry.archive_table)
        ids = (self.request.ids or {}).get(model)
        found = self.report.models[model]
        if ids is not None:
            wanted = sorted(set(ids))
            present = {
                row["original_id"]
                for row in await self.target.fetch(
                    f"SELECT original_id FROM {archive} WHERE original_id = ANY($1::bigint[])",
                    wanted,
                )
            }
            missing = len(wanted) - len(present)
            if missing:
                found.held_back["not in the archive"] = missing
            where = "original_id = ANY($2::bigint[])"
            args: list[Any] = [wanted]
        else:
            where, args = "true", []
        select = (
            f"SELECT id, original_id, data::text AS data, dependents::text AS dependents, "
            f"links::text AS links, {records.CONTENT_CHECKSUM} AS checksum, "
            f"octet_length(data::text || dependents::text) AS size FROM {archive} "
            f"WHERE ({where}) AND id < $1 ORDER BY id DESC LIMIT {int(self.settings.batch_size)}"
        )
        last = 2**63 - 1
        while True:
            await self._check_lag()
            batch = await self.target.fetch(select, last, *args)
            if not batch:
                return
            last = batch[-1]["id"]
            if self.report.dry_run:
                self._count(model, len(batch), sum(row["size"] for row in batch))
                continue
            await self._unarchive_batch(model, plan, batch)

    async def _unarchive_batch(
        self, model: str, plan: keys.ModelKeys, batch: Sequence[asyncpg.Record]
    ) -> None:
        entry = plan.entry
        ids = [row["original_id"] for row in batch]
        checksums = {row["original_id"]: row["checksum"] for row in batch}
        ledger = await self.target.fetchval(
            "INSERT INTO archive_batches (run_id, direction, model, ids, checksum, state, rows) "
            "VALUES ($1, 'unarchive', $2, $3, $4, 'copying', $5) RETURNING id",
            self.report.id,
            model,
            ids,
            _batch_checksum([checksums[i] for i in ids]),
            len(ids),
        )
        source = self._s()
        try:
            async with source.transaction():
                await self._insert_back(plan, batch)
                current = await source.fetch(records.record_sql(plan), ids)
                differs = _not_as_archived(batch, current)
                if differs is not None:
                    msg = (
                        f"{model} {differs}: the row put back does not read as archived; "
                        "nothing of this batch was put back"
                    )
                    raise MoverError(msg)
        except (asyncpg.IntegrityConstraintViolationError, MoverError) as exc:
            await self.target.execute(
                "UPDATE archive_batches SET state = 'recovered', updated_at = now() WHERE id = $1",
                ledger,
            )
            if isinstance(exc, MoverError):
                raise
            detail = getattr(exc, "detail", None) or describe(exc)
            msg = (
                f"{model}: a batch could not be put back, so none of it was: {detail} "
                "(a row it points at may still be archived: unarchive that first; or it was "
                "deleted since, and then this row cannot come back as it was)"
            )
            raise MoverError(msg) from None
        async with self.target.transaction():
            await self.target.execute(
                f"DELETE FROM {keys.quote(entry.archive_table)} "
                "WHERE original_id = ANY($1::bigint[])",
                ids,
            )
            await self.target.execute(
                "UPDATE archive_batches SET state = 'done', updated_at = now() WHERE id = $1",
                ledger,
            )
        self._count(model, len(ids), sum(row["size"] for row in batch))

    async def _insert_back(self, plan: keys.ModelKeys, batch: Sequence[asyncpg.Record]) -> None:
        """The rows, then what moved with them (a table after the one it points at), then
        the links, set back where nothing else took their place. The archive's ``jsonb`` is
        unpacked by PostgreSQL itself: no value goes through a Python float."""
        source = self._s()
        root = keys.quote(plan.entry.source_table)
        await source.execute(
            f"INSERT INTO {root} SELECT p.* FROM unnest($1::text[]) j(v), "
            f"jsonb_populate_record(NULL::{root}, j.v::jsonb) p",
            [row["data"] for row in batch],
        )
        dependents = [row["dependents"] for row in batch]
        for path in plan.dependents:
            table = keys.quote(path.table)
            await source.execute(
                f"INSERT INTO {table} SELECT p.* FROM unnest($1::text[]) j(v), "
                f"jsonb_array_elements(j.v::jsonb -> $2) e, "
                f"jsonb_populate_record(NULL::{table}, e) p",
                dependents,
                path.table,
            )
        links = [row["links"] for row in batch]
        for path in plan.links:
            column = path.steps[-1].column
            table, quoted = keys.quote(path.table), keys.quote(column)
            await source.execute(
                f"UPDATE {table} t SET {quoted} = (e ->> 1)::bigint "
                f"FROM unnest($1::text[]) j(v), jsonb_array_elements(j.v::jsonb -> $2) e "
                f"WHERE t.id = (e ->> 0)::bigint AND t.{quoted} IS NULL",
                links,
                f"{path.table}.{column}",
            )


def _contains(current: Any, archived: Any) -> bool:
    """Every column the archive kept reads the same now (a column added since may be
    there too; a column dropped since is a difference: its value would be lost)."""
    if not isinstance(current, dict) or not isinstance(archived, dict):
        return bool(current == archived)
    return all(key in current and current[key] == value for key, value in archived.items())


def _not_as_archived(
    archived: Sequence[asyncpg.Record], current: Sequence[asyncpg.Record]
) -> int | None:
    """The first row put back that differs from its archived copy, or None. Dependents
    are matched by id; a table of dependents added since archiving is simply empty."""
    now = {row["id"]: row for row in current}
    for row in archived:
        back = now.get(row["original_id"])
        if back is None or not _contains(
            msgspec.json.decode(back["data"]), msgspec.json.decode(row["data"])
        ):
            return int(row["original_id"])
        kept: dict[str, list[Any]] = msgspec.json.decode(row["dependents"])
        there: dict[str, list[Any]] = msgspec.json.decode(back["dependents"])
        for table, rows in kept.items():
            by_id = {item.get("id"): item for item in there.get(table, [])}
            if any(not _contains(by_id.get(item.get("id")), item) for item in rows):
                return int(row["original_id"])
    return None
