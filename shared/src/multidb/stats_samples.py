"""One sample of a role's statistics, as the gateway sends it to the analytics service.

A :class:`StatsSampleRecord` maps one-to-one onto a row of the analytics role's
``stats_samples`` table. Its ``sample_id`` (:func:`sample_id`) names the role and the
sampling bucket, not the sampler: several gateways sampling the same role in the same
bucket produce the same id, and the analytics service stores it once (the first to arrive
wins), so a batch may also be sent again after a failure without duplicating rows.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated

import msgspec

from multidb.wire import AVAILABLE, UNAVAILABLE

SAMPLE_STATUSES = (AVAILABLE, UNAVAILABLE)
SampleStatus = Annotated[str, msgspec.Meta(pattern=f"^({AVAILABLE}|{UNAVAILABLE})$")]


def bucket_start(epoch_s: float, interval_s: int) -> int:
    """``epoch_s`` floored to a multiple of ``interval_s`` (whole seconds since the epoch)."""
    return math.floor(epoch_s / interval_s) * interval_s


def sample_id(role: str, bucket_epoch_s: int) -> str:
    """``<role>:<bucket epoch>``: the idempotency key of one role's sample in one bucket."""
    return f"{role}:{bucket_epoch_s}"


class StatsSampleRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One role's stats at ``sampled_at`` (timezone-aware), or why they could not be read.

    ``status``: ``available`` (the figures are the role's ``/stats``) or ``unavailable``
    (``error`` says why: the service or its database was down, slow or refusing; every
    figure is ``None``). Decoding refuses unknown fields, a naive ``sampled_at`` and any
    other ``status``.
    """

    sample_id: Annotated[str, msgspec.Meta(min_length=1, max_length=96)]
    role: Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
    sampled_at: Annotated[datetime, msgspec.Meta(tz=True)]
    status: SampleStatus
    error: str | None = None
    table_count: int | None = None
    database_size_bytes: int | None = None
    connections: int | None = None
    commits: int | None = None
    rollbacks: int | None = None
    cache_hit_ratio: float | None = None
    deadlocks: int | None = None
    temp_bytes: int | None = None
