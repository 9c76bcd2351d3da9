"""``make bench``: ``multidb split`` of a generated monolith of ~1 GB.

On the bench's own embedded server (``.data/split-bench-pg``), a monolith (every built-in
role's first revision in one database, :mod:`tests.monolith`) is filled by SQL to
``BENCH_SPLIT_MB`` (default 1024) once and kept for the next run. Each run creates the
analytics, logging and archive databases afresh (empty) and splits the monolith into them
with the library (:func:`multidb.split.split`, as ``multidb split`` does; the default
role's database is the monolith itself, left as it is). Printed: the total time (checks,
migrations, copy, verification), the copy and verification times and the verification's
share of them, rows/s and MB/s of the copy, and the same figures per table.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multidb.plugins import get_roles
from multidb.settings import DatabaseSettings
from multidb.split import SplitOptions, split
from multidb_devstack.embedded import EmbeddedPostgres
from tests import monolith

ROOT = Path(__file__).resolve().parents[1]
TARGET_MB = int(os.environ.get("BENCH_SPLIT_MB", "1024"))
MONOLITH = "split_bench_monolith"
TARGETS = {role: f"split_bench_{role}" for role in ("analytics", "logging", "archive")}
CHUNK = 20_000  # rows of every table per fill step
STEP = timedelta(milliseconds=500)  # between consecutive rows' timestamps
MB = 1024 * 1024


def figure(name: str, value: str) -> None:
    print(f"  {name:<58} {value:>14}")


async def _size(database: DatabaseSettings) -> tuple[int, int]:
    """(database size in bytes, rows per table so far)."""
    conn = await database.connect()
    try:
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        rows = await conn.fetchval("SELECT coalesce(max(id), 0) FROM users")
        return int(size), int(rows)
    finally:
        await conn.close()


async def _recreate(admin: DatabaseSettings, names: list[str], *, keep: bool) -> list[str]:
    """Create each of ``names`` (dropped first unless ``keep``); those that were created."""
    conn = await admin.connect()
    created = []
    try:
        existing = {r[0] for r in await conn.fetch("SELECT datname FROM pg_database")}
        for name in names:
            if name in existing and keep:
                continue
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
            created.append(name)
    finally:
        await conn.close()
    return created


def build(server: EmbeddedPostgres, admin: DatabaseSettings) -> DatabaseSettings:
    roles = get_roles()
    database = server.database_settings(roles["default"], database=MONOLITH)
    if asyncio.run(_recreate(admin, [MONOLITH], keep=True)):
        monolith.create_tables(database, roles)
    size, rows = asyncio.run(_size(database))
    if size < TARGET_MB * MB:
        print(
            f"  generating the monolith: {size / MB:.0f} MB -> {TARGET_MB} MB (kept for next runs)"
        )
        # Timestamps end about now, whatever size is asked for.
        start = datetime(2026, 1, 1, tzinfo=UTC)
        started = time.perf_counter()
        while size < TARGET_MB * MB:
            asyncio.run(monolith.fill(database, rows + 1, rows + CHUNK, start, STEP))
            size, rows = asyncio.run(_size(database))
        print(f"  generated in {time.perf_counter() - started:.0f} s")
    return database


def main() -> int:
    server = EmbeddedPostgres(ROOT / ".data" / "split-bench-pg")
    server.start()
    roles = get_roles()
    admin = server.database_settings(roles["default"], database="postgres")
    try:
        source = build(server, admin)
        size, rows = asyncio.run(_size(source))
        asyncio.run(_recreate(admin, list(TARGETS.values()), keep=False))
        databases = {"default": source} | {
            role: server.database_settings(roles[role], database=name)
            for role, name in TARGETS.items()
        }
        url = source.url("postgresql")
        print(
            f"\nmultidb split bench: a {size / MB:.0f} MB monolith ({rows:,} rows per table), "
            f"{os.cpu_count()} cores\n"
        )
        report = asyncio.run(split(SplitOptions(source=url), roles, databases))
        if not report.verified:
            raise SystemExit("a checksum differed")
        busy = report.copy_s + report.verify_s
        figure("split: total (checks, migrations, copy, verification)", f"{report.total_s:.1f} s")
        figure(
            f"copy: {report.rows:,} rows, {report.bytes / MB:.0f} MB of COPY data",
            f"{report.copy_s:.1f} s",
        )
        figure("verification (count + checksum, both sides)", f"{report.verify_s:.1f} s")
        figure("verification share of copy + verification", f"{report.verify_s / busy:.0%}")
        figure("verification share of the total", f"{report.verify_s / report.total_s:.0%}")
        figure("copy rows/s", f"{report.rows / report.copy_s:,.0f}")
        figure("copy MB/s", f"{report.bytes / MB / report.copy_s:.1f}")
        for table in sorted(report.tables, key=lambda t: -t.bytes):
            figure(
                f"  {table.name}: {table.rows:,} rows, {table.bytes / MB:.0f} MB",
                f"{table.copy_s:.1f} + {table.verify_s:.1f} s",
            )
    finally:
        asyncio.run(_recreate(admin, [], keep=False))
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
