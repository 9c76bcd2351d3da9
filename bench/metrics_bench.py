"""``make bench``: what /stats and /metrics cost as tables grow, and a scrape beside postgres_exporter.

Two figures, each beside its target:

- scaling: a ``default`` role service on a database with 10 tables, and another on one with
  10,000 (created once in a throw-away database of the bench's embedded server); p50 of
  ``/stats`` and of ``/metrics`` on each, and the ratio (target <= 2x);
- exporter: the fleet's full scrape (the gateway's ``/metrics`` and the four services',
  fetched concurrently, as Prometheus scrapes its targets) against one scrape of
  postgres_exporter (Debian's ``prometheus-postgres-exporter``, default collectors) over
  the same four databases (target <= 1/3 of the exporter's time). The bench finds the
  exporter, or installs it with apt-get when it runs as root, and says so when it cannot.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from fleet_bench import line, wait_ready

from multidb import migrations
from multidb.plugins import get_roles
from multidb.settings import DatabaseSettings, load_settings
from multidb_devstack.embedded import EmbeddedPostgres, free_port

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = int(os.environ.get("BENCH_METRICS_SAMPLES", "300"))
EXPORTER_SAMPLES = int(os.environ.get("BENCH_EXPORTER_SAMPLES", "30"))
EXPORTER = "prometheus-postgres-exporter"
SCALES = {"bench_tables_10": 10, "bench_tables_10000": 10_000}


async def grow_to(database: DatabaseSettings, tables: int) -> None:
    """Add tables in schema ``bench`` until the database holds ``tables`` (role's included)."""
    conn = await database.connect()
    try:
        count_sql = """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE c.relkind IN ('r', 'p')
                         AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                         AND n.nspname NOT LIKE 'pg_toast%'"""
        have = await conn.fetchval(count_sql)
        await conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
        start = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'bench' AND c.relkind = 'r'"
        )
        missing = tables - have
        for first in range(start, start + missing, 1000):
            last = min(first + 1000, start + missing)
            await conn.execute(
                f"DO $$ BEGIN FOR i IN {first}..{last - 1} LOOP "
                "EXECUTE format('CREATE TABLE bench.t%s (id int PRIMARY KEY, note text)', i); "
                "END LOOP; END $$"
            )
    finally:
        await conn.close()


async def p50_ms(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    for _ in range(20):  # warm
        async with session.get(url, headers=headers) as response:
            await response.read()
    values = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        async with session.get(url, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise SystemExit(f"{url} answered {response.status}")
        values.append((time.perf_counter() - started) * 1000)
    return statistics.median(values)


async def scrape_ms(session: aiohttp.ClientSession, urls: list[str], samples: int) -> float:
    """p50 wall time of fetching every URL at once."""

    async def one(url: str) -> None:
        async with session.get(url) as response:
            await response.read()
            if response.status != 200:
                raise SystemExit(f"{url} answered {response.status}")

    for _ in range(3):
        await asyncio.gather(*(one(url) for url in urls))
    values = []
    for _ in range(samples):
        started = time.perf_counter()
        await asyncio.gather(*(one(url) for url in urls))
        values.append((time.perf_counter() - started) * 1000)
    return statistics.median(values)


def find_exporter() -> str | None:
    found = shutil.which(EXPORTER) or (
        f"/usr/bin/{EXPORTER}" if Path(f"/usr/bin/{EXPORTER}").exists() else None
    )
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print(f"  {EXPORTER} not found: installing it with apt-get", flush=True)
    result = subprocess.run(
        ["apt-get", "install", "-y", "-q", EXPORTER],  # noqa: S607 - the system's apt
        capture_output=True,
        check=False,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    if result.returncode != 0:
        print(f"  apt-get install {EXPORTER} failed: {result.stderr.decode()[-300:].strip()}")
    return shutil.which(EXPORTER)


class Stack:
    """Processes the bench starts, all stopped at the end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env, "MULTI_DB_ENV_FILE": os.devnull}
        self.logs = Path(tempfile.mkdtemp(prefix="multidb-metrics-bench-"))
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, command: list[str], ready: str, env: dict[str, str] | None = None
    ) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                command, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes.append(process)
        wait_ready(ready, process)

    def service(self, name: str, role: str, port: int, env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "multidb.service", role, "--port", str(port)]
        self.start(name, command, f"http://127.0.0.1:{port}/readyz", env)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=20)


async def scaling(ports: dict[str, int], headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession() as session:
        figures = {}
        for name, port in ports.items():
            base = f"http://127.0.0.1:{port}"
            figures[name] = (
                await p50_ms(session, f"{base}/stats", headers),
                await p50_ms(session, f"{base}/metrics", headers),
            )
    (small, large) = (figures[name] for name in SCALES)
    for index, what in enumerate(("/stats", "/metrics")):
        ratio = large[index] / small[index]
        line(
            f"{what} p50, 10,000 tables / 10 tables",
            f"{large[index]:.3f}/{small[index]:.3f} ms = {ratio:.2f}x",
            "<= 2x",
            ratio <= 2,
        )


async def exporter_side_by_side(fleet: list[str], exporters: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        together = await scrape_ms(session, fleet, SAMPLES)
        one_by_one = sum([await scrape_ms(session, [url], SAMPLES) for url in fleet])
        if not exporters:
            print(
                f"  fleet scrape (gateway + 4 services) p50 {together:.3f} ms; "
                f"postgres_exporter: not available ({EXPORTER} not found and not installable "
                "here), comparison skipped"
            )
            return
        theirs = await scrape_ms(session, exporters, EXPORTER_SAMPLES)
    ratio = together / theirs
    line(
        "fleet scrape (gateway + 4 services) / postgres_exporter x4",
        f"{together:.2f}/{theirs:.2f} ms = {ratio:.2f}",
        "<= 0.33",
        ratio <= 1 / 3,
    )
    print(
        f"  (the five fetched one after another: {one_by_one:.2f} ms = "
        f"{one_by_one / theirs:.2f} of the four exporters' scrape, fetched at once)"
    )


def main() -> int:
    roles = get_roles()
    server = EmbeddedPostgres(ROOT / ".data" / "metrics-bench-pg")
    server.start()
    # The scaling databases live on a second cluster: the exporter sizes every database of
    # the server it watches, and the comparison is about the four role databases.
    scale_server = EmbeddedPostgres(ROOT / ".data" / "metrics-bench-scale-pg")
    scale_server.start()
    asyncio.run(server.create_databases(spec.database for spec in roles.values()))
    asyncio.run(scale_server.create_databases(SCALES))
    api_key = secrets.token_urlsafe(24)
    env = {
        **server.environment(roles),
        "API_KEYS": api_key,
        "JWT_SECRET": secrets.token_urlsafe(48),
    }
    settings = load_settings(env, roles)
    for name, spec in roles.items():
        migrations.upgrade(spec, "head", settings.databases[name])
    default = roles["default"]
    for database, tables in SCALES.items():
        target = scale_server.database_settings(default, database)
        migrations.upgrade(default, "head", target)
        started = time.perf_counter()
        asyncio.run(grow_to(target, tables))
        took = time.perf_counter() - started
        if took > 1:
            print(f"  created the tables of {database} in {took:.0f} s (kept for the next run)")

    stack = Stack(env)
    headers = {"X-API-Key": api_key}
    try:
        scale_ports = {name: free_port() for name in SCALES}
        scale_env = scale_server.environment({"default": default})
        for database, port in scale_ports.items():
            stack.service(database, "default", port, {**scale_env, "DB_NAME": database})
        ports = {name: free_port() for name in [*roles, "gateway"]}
        for role in roles:
            stack.service(role, role, ports[role])
        urls = {
            f"MULTI_DB_{role.upper()}_SERVICE_URL": f"http://127.0.0.1:{ports[role]}"
            for role in roles
        }
        gateway = ports["gateway"]
        command = [sys.executable, "-m", "multidb_gateway", "--port", str(gateway)]
        stack.start("gateway", command, f"http://127.0.0.1:{gateway}/readyz", urls)

        exporter_binary = find_exporter()
        exporter_urls: list[str] = []
        # One exporter per database, as one service per database: given the four DSNs at
        # once, this version answers 500 (the server-wide series of one server, repeated).
        for role in roles if exporter_binary else ():
            exporter_port = free_port()
            # The exporter is a PostgreSQL client, so root is fine; the DSN (with the
            # password) goes through its environment, never argv.
            dsn = settings.databases[role].url("postgresql").render_as_string(hide_password=False)
            stack.start(
                f"postgres_exporter-{role}",
                [str(exporter_binary), f"--web.listen-address=127.0.0.1:{exporter_port}"],
                # Its landing page: a first scrape may take longer than the readiness poll.
                f"http://127.0.0.1:{exporter_port}/",
                {"DATA_SOURCE_NAME": dsn + "?sslmode=disable"},
            )
            exporter_urls.append(f"http://127.0.0.1:{exporter_port}/metrics")

        print(f"\nmultidb metrics bench: {SAMPLES} requests per median, {os.cpu_count()} cores\n")
        asyncio.run(scaling(scale_ports, headers))
        fleet = [f"http://127.0.0.1:{port}/metrics" for port in ports.values()]
        if exporter_binary:
            print(f"  postgres_exporter: {exporter_binary}, default collectors, one per database")
        asyncio.run(exporter_side_by_side(fleet, exporter_urls))
    finally:
        stack.stop()
        server.stop()
        scale_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
