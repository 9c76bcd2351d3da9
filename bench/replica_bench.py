"""``make bench``: read replicas, what a streaming replica adds and what routing a read costs.

Makes its own primary and one streaming replica of it (``.data/replica-bench-pg``, reused
between runs, stopped at the end whatever happens), migrates the default role and creates
a small table, then starts two services of the default role on that primary as separate
processes (as ``make run`` does): one without replicas, one with ``DB_REPLICAS`` naming the
replica. The client is aiohttp with one keep-alive session, in this process.

1. Read throughput at 32 clients, each service in turn (alternating rounds, so machine
   noise hits both alike), with the CPU seconds each part of the machine spent. On a
   2-core machine the replica runs on the same cores as everything else: it adds a
   server, not CPU, so no speed-up is expected; the CPU table shows where the time went.
2. One client, one read at a time, round-robin per sample through the service with the
   replica: routed to the replica, forced to the primary (``consistency: primary``, the
   same single hop without a routing choice) and routed with the ``min_lsn`` of a write
   the replica has replayed (the monitor's cached position answers at once). Medians.
   A control sends the service's statements for the read straight to each server
   (asyncpg, no service): the part of the replica path's extra time that is the replica
   server's own hop, not the routing.

Every answer's ``server`` is checked against where its variant claims to run: a read that
ran elsewhere ends the bench with one line and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import psutil
import uvloop
from cpu_meter import OTHERS, CpuMeter

from multidb import migrations
from multidb.plugins import get_roles
from multidb.replicas.lsn import parse_lsn
from multidb.settings import load_settings, variable_name
from multidb_devstack.embedded import EmbeddedPostgres, free_port, wait_streaming

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / ".data" / "replica-bench-pg"
ROLE = "default"
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "2000"))
WARM_UP = max(100, SAMPLES // 10)
CONCURRENCY = 32
# Per service, split in ROUNDS rounds that alternate between the two services.
THROUGHPUT_REQUESTS = int(os.environ.get("BENCH_THROUGHPUT_REQUESTS", "10000"))
ROUNDS = 5
ROWS = 100
WAIT_S = 60.0
ROUTING_TARGET = 1.1
CORES = os.cpu_count() or 1

TABLE = "CREATE TABLE IF NOT EXISTS bench_notes (id int PRIMARY KEY, note text NOT NULL)"
FILL = (
    "INSERT INTO bench_notes SELECT i, 'note ' || i FROM generate_series(1, $1) AS i "
    "ON CONFLICT (id) DO NOTHING"
)
READ = "SELECT id, note FROM bench_notes WHERE id = :id"
# The same read as the service sends it to a server (multidb.execute): a read-only
# transaction with a statement timeout, the statement prepared, rolled back; the pool's
# reset on release follows.
CONTROL_BEGIN = "BEGIN READ ONLY; SET LOCAL statement_timeout = 30000"
CONTROL_READ = "SELECT id, note FROM bench_notes WHERE id = $1"
WRITE = "UPDATE bench_notes SET note = :note WHERE id = 1"


class BenchError(Exception):
    """The bench cannot go on: one line saying why."""


class Answer(msgspec.Struct):
    """What the bench checks in an execute answer."""

    server: str | None = None
    routing: str | None = None
    row_count: int = 0
    lsn: str | None = None
    waited_ms: float | None = None
    # The service's own measure: from taking a connection to having the rows.
    duration_ms: float = 0.0


class NodeHealth(msgspec.Struct):
    address: str
    role: str
    state: str
    serving_reads: bool
    lag_bytes: int | None = None
    lag_s: float | None = None
    replay_lsn: str | None = None


class Health(msgspec.Struct):
    status: str
    nodes: list[NodeHealth] = msgspec.field(default_factory=list)


ANSWER = msgspec.json.Decoder(Answer)
HEALTH = msgspec.json.Decoder(Health)


@dataclass
class Variant:
    """One way of sending the read: where to, the bodies, where it must run."""

    name: str
    url: str
    server: str
    bodies: list[bytes]
    answers: list[Answer] = field(default_factory=list)


def read_bodies(**extra: str) -> list[bytes]:
    """The read for every row of the table (the client cycles through them)."""
    return [
        msgspec.json.encode({"query": READ, "params": {"id": row}, **extra})
        for row in range(1, ROWS + 1)
    ]


# ---- CPU accounting ------------------------------------------------------------------------


def server_processes(server: EmbeddedPostgres) -> Callable[[], list[psutil.Process]]:
    """The postmaster, its current backends and the server's TLS front, found afresh at
    each reading (a backend may come or go between two)."""
    postmaster = psutil.Process(int((server.pgdata / "postmaster.pid").read_text().split()[0]))
    front = None
    if server.front_pid_file.exists():
        front = psutil.Process(int(server.front_pid_file.read_text()))

    def found() -> list[psutil.Process]:
        processes = [postmaster, *postmaster.children(recursive=True)]
        return [*processes, front] if front is not None else processes

    return found


# ---- requests ------------------------------------------------------------------------------


async def ask(
    session: aiohttp.ClientSession, headers: dict[str, str], variant: Variant, body: bytes
) -> Answer:
    try:
        async with session.post(variant.url, data=body, headers=headers) as response:
            raw = await response.read()
            status = response.status
    except aiohttp.ClientError as exc:
        raise BenchError(f"{variant.name}: {variant.url}: {exc}") from None
    if status != 200:
        raise BenchError(f"{variant.name}: {variant.url} answered {status}: {raw[:300]!r}")
    answer = ANSWER.decode(raw)
    if answer.server != variant.server:
        raise BenchError(
            f"{variant.name} ran on {answer.server!r} ({answer.routing}), "
            f"not on {variant.server!r} as it claims"
        )
    if answer.row_count != 1:
        raise BenchError(f"{variant.name} read {answer.row_count} rows, not 1")
    return answer


async def throughput(
    session: aiohttp.ClientSession, headers: dict[str, str], variant: Variant, requests: int
) -> float:
    """Requests per second of ``requests`` reads sent by CONCURRENCY clients at once."""
    remaining = requests

    async def client(first: int) -> None:
        nonlocal remaining
        turn = first
        while remaining > 0:
            remaining -= 1
            await ask(session, headers, variant, variant.bodies[turn % len(variant.bodies)])
            turn += CONCURRENCY

    started = time.perf_counter()
    await asyncio.gather(*(client(first) for first in range(CONCURRENCY)))
    return requests / (time.perf_counter() - started)


async def interleaved(
    session: aiohttp.ClientSession,
    headers: dict[str, str],
    variants: list[Variant],
    samples: int,
) -> dict[str, list[float]]:
    """Latencies in ms of one read at a time, the variants taking turns at every sample
    (the one going first rotating too), so that noise hits each alike."""
    latencies: dict[str, list[float]] = {variant.name: [] for variant in variants}
    for sample in range(samples):
        for turn in range(len(variants)):
            variant = variants[(sample + turn) % len(variants)]
            body = variant.bodies[sample % len(variant.bodies)]
            started = time.perf_counter()
            answer = await ask(session, headers, variant, body)
            latencies[variant.name].append((time.perf_counter() - started) * 1000)
            variant.answers.append(answer)
    return latencies


async def health(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Health:
    async with session.get(f"{url}/health", headers=headers) as response:
        return HEALTH.decode(await response.read())


async def until(what: str, check: Callable[[], Any]) -> Any:
    """Poll ``check`` (a coroutine function) until it gives something truthy, or fail."""
    deadline = time.monotonic() + WAIT_S
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise BenchError(f"never happened within {WAIT_S:.0f} s: {what}")
        await asyncio.sleep(0.05)


# ---- the services --------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_service(name: str, env: dict[str, str], logs: Path) -> Service:
    port = free_port()
    log = logs / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "multidb.service", ROLE, "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            # A terminal's Ctrl-C is for the bench, which stops the services in turn.
            start_new_session=True,
        )
    return Service(name, port, process, log)


def stop_service(service: Service) -> None:
    service.process.terminate()
    try:
        service.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()


async def ready(session: aiohttp.ClientSession, service: Service) -> None:
    async def answers() -> bool:
        if service.process.poll() is not None:
            raise BenchError(
                f"service {service.name} exited with {service.process.returncode} "
                f"(its log: {service.log})"
            )
        try:
            async with session.get(f"{service.url}/readyz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await until(f"service {service.name} ready (its log: {service.log})", answers)


# ---- the cluster ---------------------------------------------------------------------------


async def prepare(primary: EmbeddedPostgres, database: str) -> None:
    """The bench table, made as the superuser before any service starts (the execute
    logins are granted what exists when a service provisions them)."""
    await primary.create_databases([database])
    conn = await primary.admin_settings(database).connect(timeout=10)
    try:
        await conn.execute(TABLE)
        await conn.execute(FILL, ROWS)
    finally:
        await conn.close()


def make_cluster(cleanup: contextlib.ExitStack) -> tuple[EmbeddedPostgres, EmbeddedPostgres]:
    """The primary, migrated, with the bench table, and its replica, streaming; each stops
    when ``cleanup`` closes."""
    roles = get_roles()
    spec = roles[ROLE]
    primary = EmbeddedPostgres(FOLDER)
    cleanup.callback(primary.stop)
    primary.start()
    asyncio.run(prepare(primary, spec.database))
    settings = load_settings(primary.environment(roles), roles)
    migrations.upgrade(spec, "head", settings.databases[ROLE])
    # Reused when it can still follow the primary, made anew (pg_basebackup -R) otherwise.
    replica = primary.create_replica(FOLDER / "replica-1")
    cleanup.callback(replica.stop)
    replica.start()
    asyncio.run(wait_streaming(primary, [replica], WAIT_S))
    return primary, replica


def service_env(
    primary: EmbeddedPostgres, replica: EmbeddedPostgres | None, api_key: str
) -> dict[str, str]:
    """A service's environment on ``primary`` (with ``replica`` as DB_REPLICAS if given);
    scheduled backups, drills and archive runs off, as the replica tests have them."""
    roles = get_roles()
    env = {
        **os.environ,
        **primary.environment(roles),
        "API_KEYS": api_key,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "MULTI_DB_ENV_FILE": os.devnull,
        # One caller with CONCURRENCY clients: let every one of them run.
        "MULTI_DB_EXECUTE_CONCURRENCY_PER_CALLER": str(CONCURRENCY),
        "MULTI_DB_ARCHIVE_INTERVAL": "off",
        "MULTI_DB_BACKUP_DIR": str(FOLDER / "backups"),
    }
    for spec in roles.values():
        env[f"MULTI_DB_{spec.name.upper()}_BACKUP_INTERVAL"] = "off"
        env[f"MULTI_DB_{spec.name.upper()}_DRILL_INTERVAL"] = "off"
    if replica is not None:
        env[variable_name(roles[ROLE], "replicas")] = replica.address
    return env


# ---- the figures ---------------------------------------------------------------------------


def p50(values: list[float]) -> float:
    return statistics.median(values)


def target_line(name: str, value: str, target: str, met: bool) -> None:
    print(f"  {name:<56} {value:>24}   target {target:<8} {'MET' if met else 'MISS'}")


def info_line(name: str, value: str, note: str = "") -> None:
    print(f"  {name:<56} {value:>24}   {note}")


PARTS = ("services", "primary", "replica", "client")
PART_NAMES = {
    "services": "services",
    "primary": "primary+front",
    "replica": "replica+front",
    "client": "client",
}


@dataclass
class Bench:
    """The cluster, the two services and the client that measure them."""

    primary: EmbeddedPostgres
    replica: EmbeddedPostgres
    alone: Service
    with_replica: Service
    session: aiohttp.ClientSession
    headers: dict[str, str]

    @property
    def on_replica(self) -> str:
        """The ``server`` of an answer that ran on the replica."""
        return f"replica:{self.replica.address}"

    async def replica_health(self) -> tuple[Health, NodeHealth | None]:
        """The service with the replica's /health, and the replica's entry in it."""
        found = await health(self.session, self.with_replica.url, self.headers)
        nodes = [node for node in found.nodes if node.address == self.replica.address]
        return found, nodes[0] if nodes else None

    async def start(self) -> None:
        """Return once both services are ready and the replica serves reads."""
        await asyncio.gather(
            ready(self.session, self.alone), ready(self.session, self.with_replica)
        )

        async def serving() -> bool:
            found, node = await self.replica_health()
            return found.status == "healthy" and node is not None and node.serving_reads

        await until(f"the replica {self.replica.address} serving reads", serving)


@dataclass
class Throughput:
    """Part 1's figures: per variant, the rate of each round, CPU seconds by part (and
    ``others``: the machine's other work meanwhile) and the wall time, over all rounds."""

    variants: list[Variant]
    per_round: int
    rates: dict[str, list[float]]
    cpu: dict[str, dict[str, float]]
    wall: dict[str, float]


async def measure_throughput(bench: Bench) -> Throughput:
    meter = CpuMeter(
        {
            "services": lambda: [
                psutil.Process(service.process.pid) for service in (bench.alone, bench.with_replica)
            ],
            "primary": server_processes(bench.primary),
            "replica": server_processes(bench.replica),
        },
        machine=True,
    )
    bodies = read_bodies()
    pair = [
        Variant("(a) primary only", f"{bench.alone.url}/execute", "primary", bodies),
        Variant(
            "(b) primary + 1 replica",
            f"{bench.with_replica.url}/execute",
            bench.on_replica,
            bodies,
        ),
    ]
    for variant in pair:  # fill the pools, warm every code path
        await throughput(bench.session, bench.headers, variant, max(CONCURRENCY * 10, WARM_UP))
    result = Throughput(
        variants=pair,
        per_round=max(CONCURRENCY, THROUGHPUT_REQUESTS // ROUNDS),
        rates={variant.name: [] for variant in pair},
        cpu={variant.name: dict.fromkeys([*PARTS, OTHERS], 0.0) for variant in pair},
        wall={variant.name: 0.0 for variant in pair},
    )
    for turn in range(ROUNDS):
        for variant in pair if turn % 2 == 0 else pair[::-1]:
            before = meter.read()
            started = time.perf_counter()
            rate = await throughput(bench.session, bench.headers, variant, result.per_round)
            result.wall[variant.name] += time.perf_counter() - started
            after = meter.read()
            result.rates[variant.name].append(rate)
            for part, spent in after.items():
                result.cpu[variant.name][part] += spent - before[part]
    return result


@dataclass
class Routing:
    """Part 2's figures: the variants (with their answers) and their latencies in ms."""

    routed: Variant
    direct: Variant
    fast: Variant
    latencies: dict[str, list[float]]
    # The control: the same statements straight to each server, no service ("primary",
    # "replica"), in ms.
    servers: dict[str, list[float]]


async def write_and_wait(bench: Bench) -> str:
    """The ``lsn`` of a write, once the service's monitor has seen the replica replay it."""
    body = {"query": WRITE, "params": {"note": secrets.token_hex(4)}, "read_only": False}
    url = f"{bench.with_replica.url}/execute"
    async with bench.session.post(
        url, data=msgspec.json.encode(body), headers=bench.headers
    ) as response:
        raw = await response.read()
        if response.status != 200:
            raise BenchError(f"the write answered {response.status}: {raw[:300]!r}")
    written = ANSWER.decode(raw)
    if written.server != "primary" or written.lsn is None:
        raise BenchError(f"the write ran on {written.server!r} with lsn {written.lsn!r}")
    lsn = written.lsn

    async def seen_replayed() -> bool:
        # The monitor's own reading (what /health shows) has passed the write: a read
        # carrying its lsn is then answered from that cached position, without a poll.
        _, node = await bench.replica_health()
        replayed = node.replay_lsn if node is not None else None
        return replayed is not None and parse_lsn(replayed) >= parse_lsn(lsn)

    await until(f"the service seeing the replica replay {lsn}", seen_replayed)
    return lsn


async def measure_routing(bench: Bench) -> Routing:
    lsn = await write_and_wait(bench)
    url = f"{bench.with_replica.url}/execute"
    routed = Variant("(a) routed to the replica", url, bench.on_replica, read_bodies())
    direct = Variant("(b) consistency: primary", url, "primary", read_bodies(consistency="primary"))
    fast = Variant("(c) min_lsn already replayed", url, bench.on_replica, read_bodies(min_lsn=lsn))
    trio = [routed, direct, fast]
    await interleaved(bench.session, bench.headers, trio, WARM_UP)
    for variant in trio:
        variant.answers.clear()
    latencies = await interleaved(bench.session, bench.headers, trio, SAMPLES)
    return Routing(routed, direct, fast, latencies, await measure_servers(bench))


async def measure_servers(bench: Bench) -> dict[str, list[float]]:
    """Latencies in ms of the service's statements for one read, sent with asyncpg straight
    to each server (one pooled connection each, so the reset on release happens too),
    the servers taking turns at every sample: how much of the replica path's time is the
    replica itself rather than the routing."""
    spec = get_roles()[ROLE]
    servers = {"primary": bench.primary, "replica": bench.replica}
    pools: dict[str, asyncpg.Pool] = {}
    try:
        for name, server in servers.items():
            database = server.database_settings(spec)
            pools[name] = await asyncpg.create_pool(
                min_size=1, max_size=1, connect=database.connector(), **database.connect_arguments
            )

        async def read(pool: asyncpg.Pool, row: int) -> None:
            async with pool.acquire() as conn:
                await conn.execute(CONTROL_BEGIN)
                statement = await conn.prepare(CONTROL_READ)
                await statement.fetch(row)
                await conn.execute("ROLLBACK")

        latencies: dict[str, list[float]] = {name: [] for name in servers}
        names = list(servers)
        for sample in range(WARM_UP + SAMPLES):
            for turn in range(len(names)):
                name = names[(sample + turn) % len(names)]
                started = time.perf_counter()
                await read(pools[name], sample % ROWS + 1)
                if sample >= WARM_UP:
                    latencies[name].append((time.perf_counter() - started) * 1000)
    finally:
        for pool in pools.values():
            await pool.close()
    return latencies


def report_throughput(found: Throughput) -> None:
    print(
        f"1. read throughput, {CONCURRENCY} clients, {ROUNDS} alternating rounds of "
        f"{found.per_round} reads per service (median round)"
    )
    medians = {name: p50(values) for name, values in found.rates.items()}
    for variant in found.variants:
        rounds_text = ", ".join(f"{rate:.0f}" for rate in found.rates[variant.name])
        info_line(
            f"{variant.name}, server {variant.server}",
            f"{medians[variant.name]:.0f} req/s",
            f"rounds {rounds_text}",
        )
    primary_only, replicated = found.variants
    ratio = medians[replicated.name] / medians[primary_only.name]
    info_line(
        "(b) / (a)",
        f"{ratio:.2f}x",
        f"no target: on {CORES} cores the replica shares the CPUs (no speed-up expected)",
    )
    print(
        f"\n  {'CPU seconds while measuring':<28} "
        + " ".join(f"{PART_NAMES[part]:>14}" for part in PARTS)
        + f" {'total':>7} {'us/read':>8} {'others':>7} {'cores busy':>10}"
    )
    reads = found.per_round * ROUNDS
    for variant in found.variants:
        spent = found.cpu[variant.name]
        total = sum(spent[part] for part in PARTS)
        # Not below 0: the kernel counts in ticks, so ours can read a hair above the total.
        others = max(0.0, spent[OTHERS])
        busy = (total + others) / (found.wall[variant.name] * CORES)
        print(
            f"  {variant.name:<28} "
            + " ".join(f"{spent[part]:>14.2f}" for part in PARTS)
            + f" {total:>7.2f} {total * 1e6 / reads:>8.0f} {others:>7.2f} {busy:>10.0%}"
        )
    print(
        "  services: both service processes (the idle one only probes); a server: its "
        "postmaster, backends,\n  WAL sender/receiver and TLS front; others: the machine's "
        "other work meanwhile; cores busy: all of it\n  against the wall time of "
        f"{CORES} cores"
    )


def report_routing(found: Routing) -> None:
    print(
        f"2. one client, one read at a time through the service with the replica, "
        f"{SAMPLES} samples per variant, round-robin per sample (p50)"
    )
    medians = {name: p50(values) for name, values in found.latencies.items()}
    for variant in (found.routed, found.direct, found.fast):
        in_database = p50([answer.duration_ms for answer in variant.answers])
        info_line(
            f"{variant.name}, server {variant.server}",
            f"{medians[variant.name]:.3f} ms",
            f"of it {in_database:.3f} ms on its connection (the answer's duration_ms)",
        )
    ratio = medians[found.routed.name] / medians[found.direct.name]
    target_line(
        "routing overhead: (a) replica path / (b) direct",
        f"{ratio:.3f}x",
        f"\N{LESS-THAN OR EQUAL TO} {ROUTING_TARGET}\N{MULTIPLICATION SIGN}",
        ratio <= ROUTING_TARGET,
    )
    ratio = medians[found.fast.name] / medians[found.routed.name]
    waited = [answer.waited_ms or 0.0 for answer in found.fast.answers]
    info_line(
        "min_lsn fast path: (c) / (a)",
        f"{ratio:.3f}x",
        f"(c)'s waited_ms p50 {p50(waited):.3f}, max {max(waited):.3f}",
    )
    servers = {name: p50(values) for name, values in found.servers.items()}
    print(
        "  control: the service's statements for that read straight to each server "
        "(asyncpg through the TLS front, no service)"
    )
    for name, median in servers.items():
        info_line(f"(d) {name} server", f"{median:.3f} ms")
    difference = medians[found.routed.name] - medians[found.direct.name]
    info_line(
        "(a) - (b) beside (d) replica - primary",
        f"{difference:.3f} / {servers['replica'] - servers['primary']:.3f} ms",
        "only a gap beyond the servers' own is the routing's",
    )


async def measure(
    primary: EmbeddedPostgres,
    replica: EmbeddedPostgres,
    alone: Service,
    with_replica: Service,
    api_key: str,
) -> None:
    headers = {"X-API-Key": api_key, "content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        bench = Bench(primary, replica, alone, with_replica, session, headers)
        await bench.start()
        throughput_found = await measure_throughput(bench)
        routing_found = await measure_routing(bench)
        final, _ = await bench.replica_health()

    print(
        f"\nmultidb replica bench: role {ROLE!r}, {CORES} cores, primary {primary.address}, "
        f"replica {replica.address} (streaming, same machine)\n"
    )
    report_throughput(throughput_found)
    print()
    report_routing(routing_found)
    print(
        "\n  every answer ran where its variant says (each answer's server checked); "
        f"the replica service's /health now: {final.status}"
    )
    for node in final.nodes:
        print(
            f"    {node.address:<18} {node.role:<8} {node.state:<6} serving_reads "
            f"{str(node.serving_reads).lower():<5} lag_bytes {node.lag_bytes} lag_s {node.lag_s} "
            f"replay_lsn {node.replay_lsn}"
        )


def main() -> int:
    api_key = secrets.token_urlsafe(24)
    logs = Path(tempfile.mkdtemp(prefix="multidb-replica-bench-"))
    try:
        # Closed last to first: the services stop, then the replica, then the primary.
        with contextlib.ExitStack() as cleanup:
            primary, replica = make_cluster(cleanup)
            services = []
            for name, with_replica in (("primary-only", None), ("with-replica", replica)):
                service = start_service(name, service_env(primary, with_replica, api_key), logs)
                cleanup.callback(stop_service, service)
                services.append(service)
            alone, replicated = services
            uvloop.run(measure(primary, replica, alone, replicated, api_key))
    except BenchError as exc:
        print(f"replica bench: {exc} (service logs in {logs})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("replica bench: interrupted; the services and servers are stopped", file=sys.stderr)
        return 130
    shutil.rmtree(logs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
