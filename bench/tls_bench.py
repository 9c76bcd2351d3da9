"""``make bench``: what TLS to the embedded server costs (the price of ``verify-full``).

The pgserver wheel's PostgreSQL has no OpenSSL, so ``make run``'s TLS comes from the TLS
front in ``multidb_devstack/tls_front.py``. This bench times, on one embedded server:

- a connection: TLS handshake (verify-full against the cluster's CA) and SCRAM password
  through the front, beside a plain-text connection to the server's Unix socket;
- a round trip (``SELECT 1`` on an open connection) through the front, beside the socket.

No target: the figures say what the default local path pays for being encrypted and
verified. A server built with OpenSSL (Debian's, for example) serves TLS itself, without
the front's hop.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

import asyncpg

from multidb import tls
from multidb.plugins import get_roles
from multidb_devstack.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
CONNECTS = int(os.environ.get("BENCH_TLS_CONNECTS", "100"))
ROUND_TRIPS = int(os.environ.get("BENCH_TLS_ROUND_TRIPS", "3000"))


async def median_connect_ms(**options: object) -> float:
    times = []
    for _ in range(CONNECTS):
        started = time.perf_counter()
        conn = await asyncpg.connect(**options)
        times.append(time.perf_counter() - started)
        await conn.close()
    return statistics.median(times) * 1000


async def median_round_trip_us(**options: object) -> float:
    conn = await asyncpg.connect(**options)
    try:
        times = []
        for _ in range(ROUND_TRIPS):
            started = time.perf_counter()
            await conn.fetchval("SELECT 1")
            times.append(time.perf_counter() - started)
    finally:
        await conn.close()
    return statistics.median(times) * 1e6


async def measure(server: EmbeddedPostgres) -> None:
    spec = get_roles()["default"]
    database = server.database_settings(spec, "postgres")
    front = {
        "host": database.host,
        "port": database.port,
        "user": database.username,
        "password": database.password,
        "database": "postgres",
        "ssl": tls.ssl_argument(database),
    }
    socket = {**front, "host": str(server.pgdata), "ssl": False}
    print(f"TLS to the embedded server ({CONNECTS} connects, {ROUND_TRIPS} round trips, medians)")
    front_connect = await median_connect_ms(**front)
    socket_connect = await median_connect_ms(**socket)
    print(f"  {'connect: TLS verify-full + SCRAM, through the front':<58} {front_connect:>9.2f} ms")
    print(f"  {'connect: plain text + SCRAM, Unix socket':<58} {socket_connect:>9.2f} ms")
    front_trip = await median_round_trip_us(**front)
    socket_trip = await median_round_trip_us(**socket)
    print(f"  {'SELECT 1: TLS, through the front':<58} {front_trip:>9.0f} us")
    print(f"  {'SELECT 1: Unix socket':<58} {socket_trip:>9.0f} us")
    print(f"  {'the front adds per round trip':<58} {front_trip - socket_trip:>9.0f} us")


def main() -> None:
    server = EmbeddedPostgres(ROOT / ".data" / "tls-bench-pg")
    server.start()
    try:
        asyncio.run(measure(server))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
