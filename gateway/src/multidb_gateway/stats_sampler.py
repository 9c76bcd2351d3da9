"""The stats sampler: every role's ``/stats`` into the analytics role's history.

Every ``MULTI_DB_STATS_SAMPLE_S`` seconds, at multiples of that interval since the
epoch, the gateway asks every role's stats at once (the same fan-out as
``/database/stats``, with its own credential) and queues one
:class:`~multidb.stats_samples.StatsSampleRecord` per role into an
:class:`~multidb_gateway.outbox.Outbox` that delivers them to the analytics service's
``POST /stats/samples``: batched, bounded, retried with backoff, kept while the analytics
service is away. The gateway samples because it is the one place that sees every role,
including one whose service is down: that role's sample is ``unavailable`` with the
reason, so its gap shows in the history.

A sample's id is its role and bucket (the interval it falls in), so gateway replicas
sampling at once store each bucket once; the first to arrive wins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

import msgspec

from multidb.errors import trace
from multidb.stats_samples import StatsSampleRecord, bucket_start, sample_id
from multidb.wire import AVAILABLE, UNAVAILABLE, StatsReport
from multidb_gateway.fleet import Fleet, RoleAnswer
from multidb_gateway.outbox import Outbox, OutboxStatus, Send

log = logging.getLogger("multidb.gateway.stats_history")
CAPACITY = 10_000  # four roles every 60 s: 41 hours of an analytics outage


# The fleet has already validated the body as a StatsReport (or built a failure report).
_decode_report = msgspec.json.Decoder(StatsReport).decode


class SamplerStatus(OutboxStatus, kw_only=True):
    """The outbox's counters plus the sampler's own: ``enabled`` (false with ``reason``
    when there is no analytics service), ``interval_s``, ``rounds`` taken and
    ``last_round_at`` (ISO-8601 UTC)."""

    enabled: bool = True
    reason: str | None = None
    interval_s: int = 0
    rounds: int = 0
    last_round_at: datetime | None = None


def to_sample(role: str, bucket: int, at: datetime, answer: RoleAnswer) -> StatsSampleRecord:
    """One role's sample from its answer in a stats fan-out; a failure keeps its reason."""
    figures = _decode_report(answer.body)
    key = sample_id(role, bucket)
    if not answer.ok or figures.status != AVAILABLE:
        error = figures.error or f"service answered {answer.status}"
        return StatsSampleRecord(
            sample_id=key, role=role, sampled_at=at, status=UNAVAILABLE, error=error
        )
    return StatsSampleRecord(
        sample_id=key,
        role=role,
        sampled_at=at,
        status=AVAILABLE,
        table_count=figures.table_count,
        database_size_bytes=figures.database_size_bytes,
        connections=figures.connections,
        commits=figures.commits,
        rollbacks=figures.rollbacks,
        cache_hit_ratio=figures.cache_hit_ratio,
        deadlocks=figures.deadlocks,
        temp_bytes=figures.temp_bytes,
    )


class StatsSampler:
    """Samples ``roles`` every ``interval_s`` and ships the samples through ``send``.

    With ``send`` None (no analytics service configured) it never samples and says so
    once, at start, and in its status.
    """

    def __init__(
        self,
        fleet: Fleet,
        roles: Iterable[str],
        interval_s: int,
        headers: Callable[[], Mapping[str, str]],
        send: Send | None,
    ) -> None:
        self.fleet = fleet
        self.roles = list(roles)
        self.interval_s = interval_s
        self._headers = headers
        self._enabled = send is not None
        self.outbox: Outbox[StatsSampleRecord] = Outbox(
            send or _nowhere,
            name="stats history",
            noun="samples",
            receiver="the analytics service",
            logger=log,
            capacity=CAPACITY,
            flush_interval_s=0.5,
        )
        self._rounds = 0
        self._last_round_at: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self._enabled:
            log.warning("stats history: no analytics service is configured; not sampling")
            return
        await self.outbox.start()
        self._task = asyncio.create_task(self._run(), name="multidb-stats-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._enabled:
            await self.outbox.stop()

    async def sample(self, bucket: int, epoch_s: float) -> list[StatsSampleRecord]:
        """Ask every role's stats once and queue one sample per role in ``bucket``, taken
        at ``epoch_s`` (a time inside the bucket)."""
        at = datetime.fromtimestamp(epoch_s, UTC)
        answers = await self.fleet.ask_all("stats", self.roles, self._headers())
        samples = [to_sample(role, bucket, at, answer) for role, answer in answers.items()]
        for sample in samples:
            self.outbox.put(sample)
        self._rounds += 1
        self._last_round_at = at
        return samples

    def status(self) -> SamplerStatus:
        shipped = msgspec.structs.asdict(self.outbox.status())
        if not self._enabled:
            reason = "no analytics service is configured (MULTI_DB_ANALYTICS_HOST/_SERVICE_URL)"
            return SamplerStatus(**shipped, enabled=False, reason=reason, interval_s=0)
        return SamplerStatus(
            **shipped,
            interval_s=self.interval_s,
            rounds=self._rounds,
            last_round_at=self._last_round_at,
        )

    async def _run(self) -> None:
        # The current bucket at once, then each bucket as it starts (by the wall clock,
        # which every replica shares): every replica samples the same buckets, whenever it
        # was started. A round slower than the interval skips the buckets it overran.
        due = bucket_start(time.time(), self.interval_s)
        while True:
            now = time.time()
            if now < due:
                await asyncio.sleep(due - now)
                continue
            try:
                await self.sample(bucket_start(now, self.interval_s), now)
            except Exception as exc:  # the next round may well succeed: never stop sampling
                log.error("stats history: a sampling round failed: %s", trace(exc))
            due = bucket_start(now, self.interval_s) + self.interval_s


async def _nowhere(_: bytes) -> None:
    msg = "no analytics service is configured to receive stats samples"
    raise RuntimeError(msg)
