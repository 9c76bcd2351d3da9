"""``make bench``: the logging and analytics roles at work, side by side in one run.

On the bench's own embedded server (``.data/ingest-bench-pg``), with real logging and
analytics service processes:

- ingestion: 32 concurrent senders POST batches of 1,000 log records (JSON, bodies encoded
  before the clock starts) to the logging service's ``/logs``, end to end over HTTP,
  against a bare ``copy_records_to_table`` of the same records into the same table from 32
  connections. Targets: >= 50% of bare COPY, and >= 50,000 records/s;
- the last 100 errors (``GET /logs?level=ERROR&limit=100``) from a table holding 10 million
  log rows (``BENCH_LOG_ROWS``; generated once by SQL over the last 30 days, kept for the
  next run): p50 <= 20 ms;
- a day's rollup (``GET /events/rollup?name=...&step=hour``) over 10 million events
  (``BENCH_EVENT_ROWS``): p50 <= 20 ms;
- through :class:`multidb.log_handler.LogShipper`: the caller's cost per ``logger.info``
  with the queue not full (shipping to the real logging service): p50 <= 10 us.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import msgspec
from fleet_bench import line
from metrics_bench import Stack

from multidb import migrations
from multidb.log_handler import LogShipper
from multidb.plugins import get_roles
from multidb.settings import DatabaseSettings, load_settings
from multidb_devstack.embedded import EmbeddedPostgres, free_port

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "ingest-bench-key-0123456789"
SENDERS = 32
BATCH = 1000
BATCHES_PER_SENDER = int(os.environ.get("BENCH_INGEST_BATCHES", "8"))
LOG_ROWS = int(os.environ.get("BENCH_LOG_ROWS", "10000000"))
EVENT_ROWS = int(os.environ.get("BENCH_EVENT_ROWS", "10000000"))
QUERIES = int(os.environ.get("BENCH_QUERIES", "200"))
HANDLER_CALLS = 50_000
GENERATE_STEP = 500_000
MARK = "bench-history"
COLUMNS = ("event_id", "created_at", "level", "logger", "message", "request_id", "context")


def records(sender: int, batch: int) -> list[dict[str, object]]:
    now = datetime.now(UTC)
    return [
        {
            "event_id": uuid.uuid4().hex,
            "timestamp": (now - timedelta(microseconds=i)).isoformat(),
            "level": "INFO" if i % 50 else "WARNING",
            "logger": f"app.sender{sender}",
            "message": f"order {sender}-{batch}-{i} accepted for shop north with 3 items",
            "request_id": f"req-{sender}-{batch}-{i}",
            "context": {"shop": "north", "items": 3},
        }
        for i in range(BATCH)
    ]


def as_rows(batch: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [
        (
            r["event_id"],
            datetime.fromisoformat(str(r["timestamp"])),
            r["level"],
            r["logger"],
            r["message"],
            r["request_id"],
            msgspec.json.encode(r["context"]).decode(),
        )
        for r in batch
    ]


async def truncate(database: DatabaseSettings) -> None:
    conn = await database.connect()
    try:
        await conn.execute("DELETE FROM application_logs WHERE message LIKE 'order %'")
    finally:
        await conn.close()


async def ingest_http(port: int) -> float:
    bodies = [
        [msgspec.json.encode(records(sender, batch)) for batch in range(BATCHES_PER_SENDER)]
        for sender in range(SENDERS)
    ]
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    url = f"http://127.0.0.1:{port}/logs"
    async with aiohttp.ClientSession() as session:

        async def sender(own: list[bytes]) -> None:
            for body in own:
                async with session.post(url, data=body, headers=headers) as answer:
                    if answer.status != 200:
                        raise SystemExit(f"/logs answered {answer.status}: {await answer.text()}")
                    await answer.read()

        started = time.perf_counter()
        await asyncio.gather(*(sender(own) for own in bodies))
        took = time.perf_counter() - started
    return SENDERS * BATCHES_PER_SENDER * BATCH / took


async def ingest_copy(database: DatabaseSettings) -> float:
    batches = [
        [as_rows(records(sender, batch)) for batch in range(BATCHES_PER_SENDER)]
        for sender in range(SENDERS)
    ]
    connections = [await database.connect() for _ in range(SENDERS)]
    try:

        async def sender(conn: asyncpg.Connection, own: list[list[tuple[object, ...]]]) -> None:
            for rows in own:
                await conn.copy_records_to_table("application_logs", records=rows, columns=COLUMNS)

        started = time.perf_counter()
        await asyncio.gather(*(sender(c, own) for c, own in zip(connections, batches, strict=True)))
        took = time.perf_counter() - started
    finally:
        for conn in connections:
            await conn.close()
    return SENDERS * BATCHES_PER_SENDER * BATCH / took


async def generated(database: DatabaseSettings, table: str, where: str) -> int:
    conn = await database.connect()
    try:
        count: int = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {where}")
        return count
    finally:
        await conn.close()


async def generate_logs(database: DatabaseSettings) -> None:
    """LOG_ROWS rows over the last 30 days, 1 in 100 an ERROR, by SQL (kept between runs)."""
    have = await generated(database, "application_logs", f"logger = '{MARK}'")
    conn = await database.connect()
    try:
        for start in range(have, LOG_ROWS, GENERATE_STEP):
            end = min(start + GENERATE_STEP, LOG_ROWS)
            await conn.execute(
                f"""
                INSERT INTO application_logs (created_at, level, logger, message, request_id, context)
                SELECT now() - (i::float8 / {LOG_ROWS}) * interval '29 days',
                       CASE WHEN i % 100 = 0 THEN 'ERROR' WHEN i % 10 = 0 THEN 'WARNING' ELSE 'INFO' END,
                       '{MARK}', 'generated record ' || i || ' ' || md5(i::text), 'req-' || i, '{{}}'
                FROM generate_series($1::bigint, $2::bigint - 1) AS i
                """,
                start,
                end,
            )
            print(f"  generated {end:,} of {LOG_ROWS:,} log rows", flush=True)
        await conn.execute("ANALYZE application_logs")
    finally:
        await conn.close()


async def generate_events(database: DatabaseSettings) -> None:
    """EVENT_ROWS events over the last 30 days in 20 names, and their hourly rollups."""
    have = await generated(database, "analytics_events", f"session_id = '{MARK}'")
    conn = await database.connect()
    try:
        for start in range(have, EVENT_ROWS, GENERATE_STEP):
            end = min(start + GENERATE_STEP, EVENT_ROWS)
            await conn.execute(
                f"""
                WITH new AS (
                  INSERT INTO analytics_events (occurred_at, name, user_id, session_id, properties)
                  SELECT now() - (i::float8 / {EVENT_ROWS}) * interval '29 days',
                         'event_' || (i % 20), i % 100000, '{MARK}', '{{}}'
                  FROM generate_series($1::bigint, $2::bigint - 1) AS i
                  RETURNING name, occurred_at
                )
                INSERT INTO analytics_event_rollups (name, bucket, events)
                SELECT name, date_trunc('hour', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                       count(*)
                FROM new GROUP BY 1, 2
                ON CONFLICT (name, bucket)
                DO UPDATE SET events = analytics_event_rollups.events + EXCLUDED.events
                """,
                start,
                end,
            )
            print(f"  generated {end:,} of {EVENT_ROWS:,} events", flush=True)
        await conn.execute("ANALYZE analytics_events")
    finally:
        await conn.close()


async def p50_ms(url: str, params: dict[str, str]) -> tuple[float, int]:
    headers = {"X-API-Key": API_KEY}
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(QUERIES):
            started = time.perf_counter()
            async with session.get(url, params=params, headers=headers) as answer:
                body = await answer.read()
                if answer.status != 200:
                    raise SystemExit(f"{url} answered {answer.status}: {body[:300]!r}")
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, len(body)


def handler_cost_us(port: int) -> float:
    handler = LogShipper(
        f"http://127.0.0.1:{port}/logs", api_key=API_KEY, capacity=HANDLER_CALLS * 2
    )
    log = logging.getLogger("bench.handler")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    times = []
    try:
        for i in range(HANDLER_CALLS):
            started = time.perf_counter_ns()
            log.info("handled %d for %s", i, "north", extra={"request_id": "req-bench"})
            times.append(time.perf_counter_ns() - started)
    finally:
        handler.close()
        log.removeHandler(handler)
    if handler.dropped:
        raise SystemExit(f"the handler dropped {handler.dropped} records")
    return statistics.median(times) / 1000


@contextmanager
def services(env: dict[str, str], ports: dict[str, int]) -> Iterator[None]:
    quiet = {
        # Not what is measured here: no backups of the generated rows, no drills.
        f"MULTI_DB_{role.upper()}_{what}_INTERVAL": "off"
        for role in ports
        for what in ("BACKUP", "DRILL")
    }
    stack = Stack({**env, **quiet, "API_KEYS": API_KEY})
    try:
        for role, port in ports.items():
            stack.service(role, role, port)
        yield
    finally:
        stack.stop()


async def measure(env: dict[str, str], ports: dict[str, int]) -> None:
    settings = load_settings(env, get_roles())
    logs_db, events_db = settings.databases["logging"], settings.databases["analytics"]
    print(f"  filling: {LOG_ROWS:,} log rows and {EVENT_ROWS:,} events (kept for the next run)")
    await generate_logs(logs_db)
    await generate_events(events_db)

    print(f"\n  {SENDERS} senders x {BATCHES_PER_SENDER} batches of {BATCH:,} records")
    # Warm both paths once, then measure each (bare first, then ours), rows removed between.
    await ingest_http(ports["logging"])
    await truncate(logs_db)
    bare = await ingest_copy(logs_db)
    await truncate(logs_db)
    ours = await ingest_http(ports["logging"])
    await truncate(logs_db)
    ratio = ours / bare
    line(
        "ingest over HTTP / bare copy_records_to_table (records/s)",
        f"{ours:,.0f}/{bare:,.0f} = {ratio:.0%}",
        ">= 50%",
        ratio >= 0.5,
    )
    line("ingest over HTTP, records/s", f"{ours:,.0f}", ">= 50,000", ours >= 50_000)

    # Over the whole generated range (not the default last 24 h): the newest errors
    # whenever the rows were generated.
    errors_ms, _ = await p50_ms(
        f"http://127.0.0.1:{ports['logging']}/logs",
        {
            "level": "ERROR",
            "limit": "100",
            "since": (datetime.now(UTC) - timedelta(days=29)).isoformat(),
        },
    )
    line(
        f"last 100 errors of {LOG_ROWS:,} log rows, p50 ms",
        f"{errors_ms:.2f}",
        "<= 20 ms",
        errors_ms <= 20,
    )
    day = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    rollup_ms, _ = await p50_ms(
        f"http://127.0.0.1:{ports['analytics']}/events/rollup",
        {
            "name": "event_7",
            "since": day.isoformat(),
            "until": (day + timedelta(days=1)).isoformat(),
            "step": "hour",
        },
    )
    line(
        f"a day's rollup over {EVENT_ROWS:,} events, p50 ms",
        f"{rollup_ms:.2f}",
        "<= 20 ms",
        rollup_ms <= 20,
    )
    cost = await asyncio.to_thread(handler_cost_us, ports["logging"])
    line("LogShipper: caller's cost per logger.info, p50 us", f"{cost:.2f}", "<= 10 us", cost <= 10)


def main() -> None:
    print(f"\nmultidb ingestion bench: {os.cpu_count()} cores")
    roles = get_roles()
    server = EmbeddedPostgres(ROOT / ".data" / "ingest-bench-pg")
    server.start()
    try:
        wanted = {name: roles[name] for name in ("logging", "analytics")}
        asyncio.run(server.create_databases(spec.database for spec in wanted.values()))
        others = [roles[name].prefix for name in roles if name not in wanted]
        env = {
            k: v for k, v in server.environment(roles).items() if not k.startswith(tuple(others))
        }
        settings = load_settings(env, roles)
        for name, spec in wanted.items():
            migrations.upgrade(spec, "head", settings.databases[name])
        ports = {name: free_port() for name in wanted}
        with services(env, ports):
            asyncio.run(measure(env, ports))
    finally:
        server.stop()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
