"""The issue's library choices, re-measured with this code (part of ``make bench``).

- The gateway's HTTP client: the fan-out of four live ``/health`` calls made with our
  :class:`ServiceClient` (aiohttp) and with an ``httpx.AsyncClient`` doing the same calls,
  each with one keep-alive client and a deadline per call.
- The health query on the hot path: a role service's own admin pool (raw asyncpg, no
  reset on release), an asyncpg pool with its default reset, and SQLAlchemy's async engine
  running the same SQL as ``text()``.

Each figure is the p50 of many sequential rounds plus the CPU this process spent per round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
import httpx
import psutil
from sqlalchemy import text

from multidb.engines import create_engine
from multidb.plugins import get_plugin_manager, get_roles
from multidb.probes import HEALTH_SQL
from multidb.service.runtime import RoleRuntime
from multidb.settings import Settings
from multidb_gateway.fleet import Fleet
from multidb_gateway.services import ServiceClient


async def rounds(call: Callable[[], Awaitable[object]], samples: int) -> tuple[float, float]:
    """p50 in ms and this process's CPU per round in µs, after a warm-up."""
    for _ in range(max(50, samples // 10)):
        await call()
    me = psutil.Process()
    before = me.cpu_times()
    latencies = []
    for _ in range(samples):
        started = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - started) * 1000)
    after = me.cpu_times()
    cpu = (after.user + after.system - before.user - before.system) * 1e6 / samples
    latencies.sort()
    return latencies[samples // 2], cpu


def row(name: str, figures: tuple[float, float], note: str = "") -> None:
    p50, cpu = figures
    print(f"    {name:<50} p50 {p50:7.3f} ms   CPU {cpu:5.0f} us/round  {note}")


async def clients(urls: Mapping[str, str], headers: Mapping[str, str], samples: int) -> None:
    roles = list(urls)
    ours = ServiceClient(urls)
    await ours.start()
    fleet = Fleet(ours, 2000)

    limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
    async with httpx.AsyncClient(limits=limits, headers=dict(headers)) as other:

        async def one(url: str) -> bytes:
            async with asyncio.timeout(2):
                response = await other.get(url)
                return response.content

        async def httpx_fan_out() -> list[bytes]:
            return await asyncio.gather(*(one(f"{urls[role]}/health") for role in roles))

        try:
            aiohttp_figures = await rounds(lambda: fleet.ask_all("health", roles, headers), samples)
            httpx_figures = await rounds(httpx_fan_out, samples)
        finally:
            await ours.close()
    print("  gateway client, fan-out of 4 live /health calls:")
    row("aiohttp (ServiceClient, chosen)", aiohttp_figures)
    slower = httpx_figures[0] / aiohttp_figures[0]
    row("httpx AsyncClient", httpx_figures, f"{slower:.1f}x the p50 of aiohttp")


async def health_queries(settings: Settings, samples: int) -> None:
    database = settings.databases["default"]
    service = RoleRuntime(get_roles()["default"], database, settings, get_plugin_manager())
    lean = await service.admin
    default = await asyncpg.create_pool(
        min_size=1, max_size=2, connect=database.connector(), **database.connect_arguments
    )
    engine = create_engine(database, pool_size=2)
    statement = text(HEALTH_SQL)

    async def with_pool(pool: asyncpg.Pool) -> object:
        async with pool.acquire() as conn:
            return await conn.fetchrow(HEALTH_SQL)

    async def with_sqlalchemy() -> object:
        async with engine.connect() as conn:
            return (await conn.execute(statement)).one()

    try:
        figures = [
            (
                "service admin pool, no reset on release (chosen)",
                await rounds(lambda: with_pool(lean), samples),
            ),
            (
                "asyncpg pool, default reset on release",
                await rounds(lambda: with_pool(default), samples),
            ),
            ("SQLAlchemy async engine, text()", await rounds(with_sqlalchemy, samples)),
        ]
    finally:
        await asyncio.gather(lean.close(), default.close(), engine.dispose())
    print("  health query from one process, one connection at a time:")
    for name, measured in figures:
        row(name, measured)


async def measure_choices(
    urls: Mapping[str, str], headers: Mapping[str, str], settings: Settings, samples: int
) -> None:
    print("\n  choices, re-measured with this code:")
    await clients(urls, headers, samples)
    await health_queries(settings, samples)
