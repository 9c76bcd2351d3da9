"""The audit record of one execute call, as the gateway sends it to the logging service.

An :class:`AccessRecord` maps one-to-one onto a row of the logging role's ``access_logs``
table. The producer (the gateway) creates ``event_id`` once per call; the logging service
inserts a record at most once per ``event_id``, so a batch may be sent again after a
failure without duplicating rows.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Annotated

import msgspec

_WHITESPACE = re.compile(r"\s+")


class AccessRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One audited request.

    ``event_id``: 32 lowercase hex characters (``uuid.uuid4().hex``), unique per call and
    the idempotency key. ``created_at``: when the call was received, timezone-aware UTC.
    ``auth_method``: ``jwt``, ``api_key`` or ``anonymous``. ``outcome``: ``allowed`` (ran),
    ``refused`` (auth, scope or a plugin vote), ``failed`` (the database raised) or
    ``rejected`` (the request itself was invalid). ``query_fingerprint`` and
    ``query_preview`` come from :func:`fingerprint` and :func:`preview`; the full query
    text is never recorded. ``error`` must be safe to show (no secrets).

    Decoding (``msgspec.json.decode(..., type=list[AccessRecord])``) refuses unknown
    fields, an ``event_id`` that is not 32 lowercase hex characters and a naive
    ``created_at``; constructing a record in Python checks nothing at run time.
    """

    event_id: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{32}$")]
    created_at: Annotated[datetime, msgspec.Meta(tz=True)]
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


class AccessRecords(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The latest access records, newest first: the logging service's ``GET /audit/access``
    and the gateway's ``GET /database/audit/recent``."""

    records: list[AccessRecord]


def _normalise(query: str) -> str:
    return _WHITESPACE.sub(" ", query).strip()


def fingerprint(query: str) -> str:
    """The sha256 hex digest (64 characters) of ``query`` with whitespace normalised.

    Every run of whitespace (spaces, tabs, newlines) counts as one space and leading and
    trailing whitespace is ignored, so the same statement laid out differently has the
    same fingerprint. The query is not parsed: case and comments change the fingerprint,
    and whitespace inside string literals is collapsed like any other.
    """
    return hashlib.sha256(_normalise(query).encode()).hexdigest()


def preview(query: str, limit: int = 200) -> str:
    """``query`` with whitespace normalised as in :func:`fingerprint`, at most ``limit`` chars.

    A query longer than ``limit`` is cut and ends with ``…`` (the result, ellipsis
    included, is still at most ``limit`` characters). ``limit`` must be at least 1.
    """
    if limit < 1:
        msg = "limit must be at least 1"
        raise ValueError(msg)
    text = _normalise(query)
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"
