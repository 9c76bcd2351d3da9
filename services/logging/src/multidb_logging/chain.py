"""The audit trail's hash chain: how one ``access_logs`` row is hashed and linked.

One module, used by both sides: the logging service computes each link when it stores a
batch (:mod:`multidb_logging.audit_route`), and ``multidb audit verify``
(:mod:`multidb_logging.verify`) recomputes it from the table.

A chain belongs to one *writer*: the authenticated subject that posted the batch to
``POST /audit/access`` (the gateway's own credential, ``multidb-gateway``; a key's or a
token's subject for any other producer). Its records are numbered ``chain_seq`` 1, 2, 3, ...
and each holds ``prev_hash``, the ``row_hash`` of the record before it (:data:`GENESIS`
for the first), and ``row_hash``::

    row_hash = sha256(canonical(chain_writer, chain_seq, prev_hash, the record's fields))

The canonical form is the msgspec JSON of a fixed-order array (:class:`_Canonical`): a
version tag, the three link fields, then every column of the record as stored except the
surrogate ``id`` (``created_at`` in UTC, ISO 8601 with microseconds, as PostgreSQL stores
it). Changing the form means a new tag and a new verifier branch: links already written
must verify forever.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

# The ``prev_hash`` of a chain's first record.
GENESIS = "0" * 64
# The first element of every canonical form: the encoding's name and version.
ENCODING = "multidb.access_logs.v1"
# Columns that make a record a link of its chain (hashed too, so moving a row breaks it).
LINK_FIELDS = ("chain_writer", "chain_seq", "prev_hash")


class _Canonical(msgspec.Struct, array_like=True, tag=ENCODING):
    """What is hashed, in this order. Never reorder: add a new struct with a new tag."""

    chain_writer: str
    chain_seq: int
    prev_hash: str
    event_id: str
    created_at: str
    request_id: str | None
    principal: str | None
    auth_method: str
    method: str | None
    path: str | None
    target_role: str | None
    query_fingerprint: str | None
    query_preview: str | None
    read_only: bool
    outcome: str
    status_code: int
    row_count: int | None
    duration_ms: float | None
    error: str | None
    client_ip: str | None


# The record's own columns that are hashed (every stored column but ``id`` and the chain's).
RECORD_FIELDS: tuple[str, ...] = tuple(
    name for name in _Canonical.__struct_fields__ if name not in LINK_FIELDS
)
_encode = msgspec.json.Encoder().encode


def utc_text(moment: datetime) -> str:
    """``moment`` as the canonical form writes it: UTC, ISO 8601, always microseconds."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(writer: str, seq: int, prev_hash: str, fields: Mapping[str, Any]) -> bytes:
    """The bytes hashed for one record: ``fields`` maps every name of :data:`RECORD_FIELDS`
    to its value as stored (a mapping of the row, or a dict built by the writer)."""
    values = {name: fields[name] for name in RECORD_FIELDS}
    values["created_at"] = utc_text(values["created_at"])
    duration = values["duration_ms"]
    # A float column: 2 and 2.0 are the same stored value and must encode alike.
    values["duration_ms"] = None if duration is None else float(duration)
    return _encode(_Canonical(chain_writer=writer, chain_seq=seq, prev_hash=prev_hash, **values))


def link_hash(writer: str, seq: int, prev_hash: str, fields: Mapping[str, Any]) -> str:
    """``row_hash`` of a record: sha256 hex (64 characters) of :func:`canonical`."""
    return hashlib.sha256(canonical(writer, seq, prev_hash, fields)).hexdigest()


# The pre-chain seal: the row of ``access_log_chains`` that migration 0002 wrote for the
# records stored before any chain (``last_seq`` their count, ``last_hash`` this digest over
# their ids). No writer has this name: :func:`multidb_logging.store.chain_writer` never
# returns it.
PRE_CHAIN_WRITER = ""
PRE_CHAIN_DIGEST = (
    "encode(sha256(convert_to(coalesce(string_agg(id::text, ',' ORDER BY id), ''), 'UTF8')), 'hex')"
)
