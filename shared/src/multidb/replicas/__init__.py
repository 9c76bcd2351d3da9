"""Read replicas and clusters: which server of a role is the primary, how far behind each
replica is, where each statement runs, and reads that see the caller's own writes.

- :mod:`multidb.replicas.monitor`: :class:`ReplicaSet`, the background watch of a role's
  servers (primary, lag in bytes and seconds, who serves reads, failover).
- :mod:`multidb.replicas.routing`: the role service's execute routing and its headers.
- :mod:`multidb.replicas.metrics`: the servers and the routing as Prometheus metrics.
- :mod:`multidb.replicas.lsn`: WAL positions, the read-your-writes token.

In Python: ``get_db(name, readonly=True)`` reads from a replica (``min_lsn=`` a token from
:func:`write_position` for one that has replayed an earlier write).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from multidb.replicas.lsn import format_lsn, parse_lsn
from multidb.replicas.monitor import Node, ReplicaSet


async def write_position(session: AsyncSession) -> str:
    """The WAL position after ``session``'s committed writes: pass it as ``min_lsn`` to a
    later read (any process, any service) that must see them."""
    # The insert position: at or past the commit's end even if it is not written out yet.
    result = await session.execute(text("SELECT pg_current_wal_insert_lsn()::text"))
    position: str = result.scalar_one()
    return position


__all__ = ["Node", "ReplicaSet", "format_lsn", "parse_lsn", "write_position"]
