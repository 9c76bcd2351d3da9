"""``make bench``: what a backup costs beyond the ``pg_dump`` it runs.

On the bench's own embedded server (``.data/backup-bench-pg``) the default role's database
is migrated and filled once with ~200 MB (``BENCH_BACKUP_MB``) of generated rows in its
own tables (``users``, ``people``, ``media``; kept for the next run). Then, interleaved
(bare, ours, bare, ours... ``BENCH_BACKUP_ROUNDS`` each, after one untimed run of each
to warm the cache), with medians:

- bare: the same ``pg_dump`` binary as a backup runs, ``pg_dump -Fc -f <file>``, over the
  same Unix socket and passfile (:func:`multidb.backups.tools.tool_environment`), timed
  from start to exit;
- ours: :meth:`RoleBackups.run_backup` (snapshot, ``pg_dump --format=custom --snapshot``,
  row counts of every table in the same snapshot while it dumps, sha256, fsync, rename,
  manifest).

Target: ours <= 1.15x bare. The CPU time of each (this process and its children, and the
PostgreSQL server's processes) shows how loaded the machine was; the breakdown of ours
(pg_dump, the row counts running beside it, sha256 + fsync + rename) where the rest goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import psutil

from multidb import migrations
from multidb.backups import engine
from multidb.backups.engine import RoleBackups
from multidb.backups.tools import find_tools, tool_environment
from multidb.plugins import get_roles
from multidb.settings import DatabaseSettings, load_settings
from multidb_devstack.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = int(os.environ.get("BENCH_BACKUP_ROUNDS", "5"))
TARGET_MB = int(os.environ.get("BENCH_BACKUP_MB", "200"))
TARGET_RATIO = 1.15
BATCH = 10_000
MB = 1024 * 1024

P = ParamSpec("P")
T = TypeVar("T")

# One batch of rows per table, ids $1..$2: every value computed by the server.
FILL = (
    """
    INSERT INTO users (id, username, email, phone, hashed_password, is_active,
                       email_verified_at, created_at, updated_at)
    SELECT i, 'user_' || i || '_' || substr(md5(random()::text), 1, 8),
           'user' || i || '@' || substr(md5(random()::text), 1, 10) || '.example.com',
           '+1' || lpad(i::text, 12, '0'),
           '$argon2id$v=19$m=65536,t=3,p=4$' || md5(random()::text) || '$'
             || md5(random()::text) || md5(random()::text),
           i % 17 <> 0,
           CASE WHEN i % 3 = 0 THEN NULL ELSE now() - (i % 5000) * interval '1 hour' END,
           now() - (i % 20000) * interval '1 hour', now() - (i % 300) * interval '1 minute'
    FROM generate_series($1::int, $2::int) AS i
    """,
    """
    INSERT INTO people (id, user_id, first_name, middle_name, last_name, date_of_birth,
                        gender, nationality, national_id_number, address, phone, email)
    SELECT i, i,
           initcap(substr(md5(random()::text), 1, 4 + i % 7)),
           CASE WHEN i % 4 = 0 THEN initcap(substr(md5(random()::text), 1, 6)) END,
           initcap(substr(md5(random()::text), 1, 5 + i % 9)),
           date '1940-01-01' + (i % 25000),
           (ARRAY['female', 'male', 'other', 'unspecified'])[1 + i % 4],
           (ARRAY['USA', 'GBR', 'FRA', 'DEU', 'NGA', 'IND', 'BRA', 'JPN'])[1 + i % 8],
           upper(substr(md5(random()::text), 1, 14)),
           (1 + i % 9999) || ' ' || initcap(substr(md5(random()::text), 1, 12)) || ' Street, '
             || initcap(substr(md5(random()::text), 1, 9)) || ', '
             || upper(substr(md5(random()::text), 1, 6)),
           '+44' || lpad((i * 7)::text, 11, '0'),
           'person' || i || '@' || substr(md5(random()::text), 1, 8) || '.example.org'
    FROM generate_series($1::int, $2::int) AS i
    """,
    """
    INSERT INTO media (id, uploaded_by, filename, original_name, mime_type, size_bytes, disk,
                       path, checksum_sha256, metadata)
    SELECT i, i, md5(random()::text) || '.jpg', 'IMG_' || lpad(i::text, 8, '0') || '.jpg',
           (ARRAY['image/jpeg', 'image/png', 'application/pdf', 'video/mp4'])[1 + i % 4],
           (random() * 1e8)::bigint, 'local',
           'uploads/' || to_char(date '2020-01-01' + (i % 2000), 'YYYY/MM/DD') || '/'
             || md5(random()::text) || '.jpg',
           encode(sha256(i::text::bytea), 'hex'),
           jsonb_build_object('width', 640 + i % 3000, 'height', 480 + i % 2000,
                              'camera', 'Model ' || (i % 50),
                              'caption', md5(random()::text) || ' ' || md5(random()::text))
    FROM generate_series($1::int, $2::int) AS i
    """,
)


async def server_major(database: DatabaseSettings) -> int:
    conn = await database.connect()
    try:
        return int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()


async def fill(database: DatabaseSettings, target: int) -> int:
    """Add batches of rows until the database is ``target`` bytes; its size at the end."""
    conn = await database.connect()
    try:
        size: int = await conn.fetchval("SELECT pg_database_size(current_database())")
        if size >= target * 0.95:
            return size
        print(f"  filling the default role's database to ~{target // MB} MB", flush=True)
        started = time.perf_counter()
        first = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM users")) + 1
        while size < target:
            async with conn.transaction():
                for statement in FILL:
                    await conn.execute(statement, first, first + BATCH - 1)
            first += BATCH
            size = await conn.fetchval("SELECT pg_database_size(current_database())")
        # Hint bits set and statistics taken now, not by the first timed dump.
        await conn.execute("VACUUM (FREEZE, ANALYZE)")
        await conn.execute("CHECKPOINT")
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        took = time.perf_counter() - started
        print(f"  filled in {took:.0f} s, {first - 1} rows per table (kept for the next run)")
    finally:
        await conn.close()
    return size


def own_cpu() -> float:
    """CPU seconds of this process and its waited-for children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def server_cpu(postmaster: psutil.Process) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster, its exited backends, the live ones."""
    times = postmaster.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in postmaster.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
    return total


@dataclass
class Sample:
    wall: float
    cpu: float
    server_cpu: float
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class Parts:
    """Wall time of the backup's steps, summed while :meth:`timing` wraps the engine's."""

    seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, name: str, function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    def timed_sync(self, name: str, function: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        wrapped: dict[str, Any] = {
            "run_tool": self.timed("pg_dump", engine.run_tool),
            "_row_counts": self.timed("row counts", engine._row_counts),
            "_seal": self.timed_sync("sha256 + fsync + rename", engine._seal),
        }
        originals = {name: getattr(engine, name) for name in wrapped}
        for name, function in wrapped.items():
            setattr(engine, name, function)
        try:
            yield
        finally:
            for name, function in originals.items():
                setattr(engine, name, function)


class Bench:
    def __init__(self, server: EmbeddedPostgres, backup_dir: Path) -> None:
        roles = get_roles()
        self.spec = roles["default"]
        env = {**server.environment(roles), "MULTI_DB_BACKUP_DIR": str(backup_dir)}
        self.settings = load_settings(env, roles)
        self.database = self.settings.databases["default"]
        self.backup_dir = backup_dir
        self.backups = RoleBackups(self.settings.backups, self.spec, self.database)
        pid = int((server.pgdata / "postmaster.pid").read_text().split()[0])
        self.postmaster = psutil.Process(pid)
        self.dump_bytes = 0
        self.tools = find_tools(
            self.settings.backups.bin_dir, asyncio.run(server_major(self.database))
        )

    def clear(self) -> None:
        for entry in self.backup_dir.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def measure(self, run: Callable[[], dict[str, float]]) -> Sample:
        self.clear()
        cpu, server = own_cpu(), server_cpu(self.postmaster)
        started = time.perf_counter()
        parts = run()
        wall = time.perf_counter() - started
        sample = Sample(
            wall=parts.pop("wall", wall),
            cpu=own_cpu() - cpu,
            server_cpu=server_cpu(self.postmaster) - server,
            parts=parts,
        )
        self.clear()
        return sample

    def bare(self) -> dict[str, float]:
        target = self.backup_dir / "bare.dump"
        with tool_environment(self.database, host=self.backups.policy.host) as env:
            started = time.perf_counter()
            subprocess.run(
                [self.tools.pg_dump, "-Fc", "-f", str(target)],
                env=env,
                stdin=subprocess.DEVNULL,
                check=True,
            )
            wall = time.perf_counter() - started
        self.dump_bytes = target.stat().st_size
        return {"wall": wall}

    def ours(self) -> dict[str, float]:
        parts = Parts()

        async def once() -> float:
            started = time.perf_counter()
            manifest = await self.backups.run_backup(trigger="cli")
            wall = time.perf_counter() - started
            if manifest.status != "ok":
                raise SystemExit(f"the backup failed: {manifest.error}")
            return wall

        with parts.timing():
            wall = asyncio.run(once())
        return {"wall": wall, **parts.seconds}


def median(samples: list[Sample], what: Callable[[Sample], float]) -> float:
    return statistics.median(what(sample) for sample in samples)


def report(size: int, dump_bytes: int, bare: list[Sample], ours: list[Sample]) -> None:
    ours_s, bare_s = median(ours, lambda s: s.wall), median(bare, lambda s: s.wall)
    ratio = ours_s / bare_s
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    print(
        f"  backup of a {size / MB:.0f} MB database: ours {ours_s:.2f} s vs bare "
        f"pg_dump -Fc {bare_s:.2f} s = {ratio:.2f}x (target <= {TARGET_RATIO}x) {verdict}"
    )
    print(
        f"  (dump file {dump_bytes / MB:.0f} MB; "
        f"rounds: ours {', '.join(f'{s.wall:.2f}' for s in ours)} s, "
        f"bare {', '.join(f'{s.wall:.2f}' for s in bare)} s)"
    )
    for name in ("pg_dump", "row counts", "sha256 + fsync + rename"):
        value = statistics.median(sample.parts.get(name, 0.0) for sample in ours)
        note = " (beside pg_dump)" if name == "row counts" else ""
        print(f"    ours: {name:<40} {value:>7.2f} s{note}")
    accounted = median(
        ours,
        lambda s: (
            s.wall - s.parts.get("pg_dump", 0.0) - s.parts.get("sha256 + fsync + rename", 0.0)
        ),
    )
    print(f"    ours: {'the rest (connect, snapshot, manifests)':<40} {accounted:>7.2f} s")
    cpu: dict[str, float] = {}
    for label, samples in (("bare", bare), ("ours", ours)):
        mine = median(samples, lambda s: s.cpu)
        theirs = median(samples, lambda s: s.server_cpu)
        cpu[label] = mine + theirs
        print(
            f"  CPU {label}: this process + children {mine:.2f} s, PostgreSQL server {theirs:.2f} s"
        )
    print(
        f"  CPU ours / bare = {cpu['ours'] / cpu['bare']:.2f}x (wall times vary more on a shared machine)"
    )


def main() -> int:
    server = EmbeddedPostgres(ROOT / ".data" / "backup-bench-pg")
    server.start()
    backup_dir = Path(tempfile.mkdtemp(prefix="multidb-backup-bench-"))
    try:
        spec = get_roles()["default"]
        asyncio.run(server.create_databases([spec.database]))
        bench = Bench(server, backup_dir)
        migrations.upgrade(spec, "head", bench.database)
        size = asyncio.run(fill(bench.database, TARGET_MB * MB))
        print(
            f"\nmultidb backup bench: {ROUNDS} rounds each, interleaved, medians, "
            f"{os.cpu_count()} cores\n"
        )
        bench.measure(bench.bare)  # warm the cache (untimed)
        bench.measure(bench.ours)
        bare: list[Sample] = []
        ours: list[Sample] = []
        for _ in range(ROUNDS):
            bare.append(bench.measure(bench.bare))
            ours.append(bench.measure(bench.ours))
        report(size, bench.dump_bytes, bare, ours)
    finally:
        shutil.rmtree(backup_dir, ignore_errors=True)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
