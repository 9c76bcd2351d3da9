"""The source database: its URL, a connection to it, and the session settings of a split.

Both sides of a split run with the same settings, so that the text form of a row (what
the checksum of :mod:`multidb.split.verify` hashes, and what COPY's text format carries)
is the same on both: UTC, ISO dates, floats in their shortest exact form.
"""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from multidb.errors import CONNECTION_ERRORS, describe
from multidb.split.errors import SplitError

DRIVERS = ("postgresql", "postgresql+asyncpg", "postgres")
CONNECT_TIMEOUT_S = 10.0
APPLICATION_NAME = "multidb split"
SESSION_SETTINGS = {
    "application_name": APPLICATION_NAME,
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    # A split's statements and transactions are long on purpose.
    "statement_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
}


def parse_source(raw: str) -> URL:
    """``raw`` as a URL; :class:`SplitError` (never quoting the password) when it is not
    a ``postgresql://user:pass@host:port/db`` one."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        # The text may hold a password: say what is wrong, not what was given.
        msg = "--source: not a URL (expected postgresql://user:password@host:port/database)"
        raise SplitError(msg) from None
    shown = display(url)
    if url.drivername not in DRIVERS:
        msg = f"--source {shown}: expected a postgresql:// URL (got {url.drivername}://)"
        raise SplitError(msg)
    if not url.database:
        raise SplitError(f"--source {shown}: names no database")
    return url


def display(url: URL) -> str:
    """``url`` safe to print: the password hidden."""
    return url.render_as_string(hide_password=True)


async def connect_source(url: URL) -> asyncpg.Connection:
    """A connection to the source with the split's session settings; :class:`SplitError`
    naming the (redacted) URL when it cannot be made."""
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        return await asyncpg.connect(
            dsn, timeout=CONNECT_TIMEOUT_S, server_settings=SESSION_SETTINGS
        )
    except (TimeoutError, *CONNECTION_ERRORS, asyncpg.PostgresError, ValueError) as exc:
        reason = describe(exc, int(CONNECT_TIMEOUT_S * 1000))
        if isinstance(exc, ValueError):
            reason = "invalid connection parameters"
        msg = f"cannot connect to the source {display(url)}: {reason}"
        raise SplitError(msg) from None
