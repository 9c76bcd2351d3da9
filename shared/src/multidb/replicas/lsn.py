"""WAL positions (``pg_lsn``) as PostgreSQL writes them, ``16/B374D848``, and as numbers."""

from __future__ import annotations

from multidb.errors import BadRequestError


def parse_lsn(text: str, where: str = "min_lsn") -> int:
    """The byte offset ``text`` names; :class:`BadRequestError` naming ``where`` otherwise."""
    high, slash, low = text.strip().partition("/")
    try:
        if not slash or not 1 <= len(high) <= 8 or not 1 <= len(low) <= 8:
            raise ValueError
        return (int(high, 16) << 32) + int(low, 16)
    except ValueError:
        msg = f"{where}: {text[:40]!r} is not a WAL position like 16/B374D848 (a write's lsn)"
        raise BadRequestError(msg) from None


def format_lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
