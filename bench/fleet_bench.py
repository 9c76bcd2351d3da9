"""``make bench``: the gateway against its services, on the embedded PostgreSQL, in one run.

Starts the four role services and the gateway as separate processes (as ``make run``
does), then prints medians of many requests, each beside its target. The client is
aiohttp with one keep-alive session, in this process; every figure pays the same client.

For the two fan-out figures it also prints where the CPU went (per process, read from
the kernel's accounting) and the best mean those CPU seconds allow on this machine's
cores: the floor no scheduling can beat, so a miss can be told from a slow hop.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import msgspec
import psutil
import uvloop
from choices import measure_choices
from cpu_meter import CpuMeter

from multidb import migrations
from multidb.plugins import get_roles
from multidb.settings import load_settings
from multidb_devstack.embedded import EmbeddedPostgres, free_port
from multidb_gateway.fleet import Fleet
from multidb_gateway.services import ServiceClient

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "1500"))
CONCURRENCY = 32
THROUGHPUT_REQUESTS = int(os.environ.get("BENCH_THROUGHPUT_REQUESTS", "6000"))


CORES = os.cpu_count() or 1


class CpuUse(msgspec.Struct, frozen=True):
    """CPU microseconds per request, by part, and the mean wall time of a request."""

    per_request_us: dict[str, float]
    wall_us: float

    @property
    def total_us(self) -> float:
        return sum(self.per_request_us.values())

    @property
    def floor_ms(self) -> float:
        """The mean a request could not beat with every core busy on nothing else."""
        return self.total_us / CORES / 1000

    @property
    def utilisation(self) -> float:
        return self.total_us / (self.wall_us * CORES)


async def metered(
    meter: CpuMeter, run: Callable[[], Awaitable[list[float]]]
) -> tuple[float, CpuUse]:
    """p50 of ``run``'s latencies and the CPU its requests cost."""
    before = meter.read()
    started = time.perf_counter()
    values = await run()
    wall_us = (time.perf_counter() - started) * 1e6 / len(values)
    after = meter.read()
    per_request = {part: (after[part] - before[part]) * 1e6 / len(values) for part in before}
    return p50(values), CpuUse(per_request, wall_us)


def postgres_processes(server: EmbeddedPostgres) -> Callable[[], list[psutil.Process]]:
    """The postmaster and its current backends, found afresh at each reading."""
    postmaster = psutil.Process(int((server.pgdata / "postmaster.pid").read_text().split()[0]))
    return lambda: [postmaster, *postmaster.children(recursive=True)]


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} never became ready")


async def latencies(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None = None,
    *,
    samples: int = SAMPLES,
) -> list[float]:
    result = []
    for _ in range(samples):
        started = time.perf_counter()
        async with session.request(method, url, headers=headers, data=body) as response:
            await response.read()
            if response.status != 200:
                raise SystemExit(f"{url} answered {response.status}")
        result.append((time.perf_counter() - started) * 1000)
    return result


async def throughput(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None = None,
) -> float:
    remaining = THROUGHPUT_REQUESTS

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.request(method, url, headers=headers, data=body) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"{url} answered {response.status}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return THROUGHPUT_REQUESTS / (time.perf_counter() - started)


async def timed(call: Callable[[], Awaitable[object]], samples: int = SAMPLES) -> list[float]:
    result = []
    for _ in range(samples):
        started = time.perf_counter()
        await call()
        result.append((time.perf_counter() - started) * 1000)
    return result


def p50(values: list[float]) -> float:
    return statistics.median(values)


def line(name: str, value: str, target: str, ok: bool) -> None:
    print(f"  {name:<58} {value:>14}   target {target:<12} {'PASS' if ok else 'MISS'}")


def cpu_row(name: str, use: CpuUse) -> None:
    parts = "  ".join(f"{use.per_request_us[part]:>7.0f}" for part in PARTS)
    print(
        f"  {name:<28} {parts}  {use.total_us:>7.0f}   {use.floor_ms:>8.3f} ms  {use.utilisation:>7.0%}"
    )


PARTS = ("gateway", "services", "postgres", "client")


async def measure(ports: dict[str, int], api_key: str, meter: CpuMeter) -> None:
    headers = {"X-API-Key": api_key}
    execute_body = b'{"query": "SELECT 1"}'
    json_headers = {**headers, "content-type": "application/json"}
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    default = f"http://127.0.0.1:{ports['default']}"
    connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm every pool and code path first.
        await latencies(session, "GET", f"{gateway}/database/health", headers, samples=200)
        await latencies(
            session,
            "POST",
            f"{gateway}/database/default/execute",
            json_headers,
            execute_body,
            samples=200,
        )
        await latencies(
            session, "POST", f"{default}/execute", json_headers, execute_body, samples=200
        )

        direct_health, direct_cpu = await metered(
            meter, lambda: latencies(session, "GET", f"{default}/health", headers)
        )
        fleet_health, fleet_cpu = await metered(
            meter, lambda: latencies(session, "GET", f"{gateway}/database/health", headers)
        )
        cached_health = p50(
            await latencies(session, "GET", f"{gateway}/database/health/cached", headers)
        )
        direct_execute = p50(
            await latencies(session, "POST", f"{default}/execute", json_headers, execute_body)
        )
        gateway_execute = p50(
            await latencies(
                session, "POST", f"{gateway}/database/default/execute", json_headers, execute_body
            )
        )
        direct_rps = await throughput(
            session, "POST", f"{default}/execute", json_headers, execute_body
        )
        gateway_rps = await throughput(
            session, "POST", f"{gateway}/database/default/execute", json_headers, execute_body
        )

    # Concurrent against one-after-another fan-out, with the gateway's own client code.
    client = ServiceClient({role: f"http://127.0.0.1:{ports[role]}" for role in get_roles()})
    await client.start()
    fleet = Fleet(client, 2000)
    roles = list(get_roles())
    try:
        await timed(lambda: fleet.ask_all("health", roles, headers), 200)
        concurrent, concurrent_cpu = await metered(
            meter, lambda: timed(lambda: fleet.ask_all("health", roles, headers))
        )
        serial, serial_cpu = await metered(
            meter, lambda: timed(lambda: fleet.ask_one_by_one("health", roles, headers))
        )
    finally:
        await client.close()

    print(
        f"\nmultidb bench: {SAMPLES} requests per median, {os.cpu_count()} cores, "
        f"throughput {THROUGHPUT_REQUESTS} requests at {CONCURRENCY} clients\n"
    )
    print(
        f"  direct service GET /health p50 {direct_health:.3f} ms; "
        f"direct POST /execute p50 {direct_execute:.3f} ms"
    )
    ratio = fleet_health / direct_health
    line(
        "fleet /database/health (4 roles, live) p50 / direct /health",
        f"{fleet_health:.3f} ms = {ratio:.2f}x",
        "<= 3.5x",
        ratio <= 3.5,
    )
    speedup = serial / concurrent
    line(
        "fan-out one-after-another p50 / concurrent p50",
        f"{serial:.3f}/{concurrent:.3f} = {speedup:.2f}x",
        ">= 2x",
        speedup >= 2,
    )
    ratio = gateway_execute / direct_execute
    line(
        "gateway execute SELECT 1 p50 / direct (1 client)",
        f"{gateway_execute:.3f} ms = {ratio:.2f}x",
        "<= 1.8x",
        ratio <= 1.8,
    )
    share = gateway_rps / direct_rps
    line(
        f"gateway execute throughput / direct ({CONCURRENCY} clients)",
        f"{gateway_rps:.0f}/{direct_rps:.0f} = {share:.0%}",
        ">= 50%",
        share >= 0.5,
    )
    ratio = cached_health / direct_health
    line(
        "cached /database/health/cached p50 / direct /health",
        f"{cached_health:.3f} ms = {ratio:.2f}x",
        "<= 1.0x",
        ratio <= 1.0,
    )

    print(
        f"\n  {'CPU per request, us':<28} "
        + "  ".join(f"{part:>7}" for part in PARTS)
        + f"  {'total':>7}   floor ({CORES} cores)  use"
    )
    cpu_row("direct /health", direct_cpu)
    cpu_row("fleet /database/health", fleet_cpu)
    cpu_row("fan-out, concurrent", concurrent_cpu)
    cpu_row("fan-out, one after another", serial_cpu)
    print(
        f"  best possible here: fleet ratio {fleet_cpu.floor_ms / direct_health:.2f}x "
        f"(its CPU floor / direct p50), fan-out {serial / concurrent_cpu.floor_ms:.2f}x "
        f"(one-after-another p50 / concurrent floor), each with every core busy"
    )


def main() -> int:
    roles = get_roles()
    server = EmbeddedPostgres(ROOT / ".data" / "bench-pg")
    server.start()
    asyncio.run(server.create_databases(spec.database for spec in roles.values()))
    api_key = secrets.token_urlsafe(24)
    env = {
        **server.environment(roles),
        "API_KEYS": api_key,
        "JWT_SECRET": secrets.token_urlsafe(48),
        # The bench is one caller with CONCURRENCY clients: let every one of them run.
        "MULTI_DB_EXECUTE_CONCURRENCY_PER_CALLER": str(CONCURRENCY),
    }
    settings = load_settings(env, roles)
    for name, spec in roles.items():
        migrations.upgrade(spec, "head", settings.databases[name])
    ports = {name: free_port() for name in [*roles, "gateway"]}
    env.update(
        {
            f"MULTI_DB_{name.upper()}_SERVICE_URL": f"http://127.0.0.1:{ports[name]}"
            for name in roles
        }
    )
    child_env = {**os.environ, **env, "MULTI_DB_ENV_FILE": os.devnull}
    processes: list[subprocess.Popen[bytes]] = []
    logs = Path(tempfile.mkdtemp(prefix="multidb-bench-"))
    try:
        for name in [*roles, "gateway"]:
            command = (
                [sys.executable, "-m", "multidb_gateway", "--port", str(ports[name])]
                if name == "gateway"
                else [sys.executable, "-m", "multidb.service", name, "--port", str(ports[name])]
            )
            with (logs / f"{name}.log").open("wb") as log:
                process = subprocess.Popen(
                    command, env=child_env, stdout=log, stderr=subprocess.STDOUT
                )
            processes.append(process)
            wait_ready(f"http://127.0.0.1:{ports[name]}/readyz", process)
        # uvloop, as the gateway and services run under uvicorn: the client side of the
        # fan-out comparison is the gateway's own code and should run on the same loop.
        *services, gateway = [psutil.Process(process.pid) for process in processes]
        meter = CpuMeter(
            {
                "gateway": lambda: [gateway],
                "services": lambda: services,
                "postgres": postgres_processes(server),
            }
        )
        uvloop.run(measure(ports, api_key, meter))
        urls = {role: f"http://127.0.0.1:{ports[role]}" for role in roles}
        uvloop.run(measure_choices(urls, {"X-API-Key": api_key}, settings, SAMPLES))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
