"""The audit trail: access records batched off the request path, delivered at least once.

An :class:`AuditTrail` is an :class:`~multidb_gateway.outbox.Outbox` of
:class:`~multidb.audit_records.AccessRecord` delivered to the logging service, which
stores each ``event_id`` once. Batching, backoff, the bounded buffer and how refusals
are told from outages are the outbox's (see there).
"""

from __future__ import annotations

import logging

from multidb.audit_records import AccessRecord
from multidb_gateway.outbox import (
    ERROR_TEXT_LIMIT,
    DeliveryRefusedError,
    Outbox,
    OutboxStatus,
    Send,
)

__all__ = ["ERROR_TEXT_LIMIT", "AuditStatus", "AuditTrail", "DeliveryRefusedError", "Send"]

log = logging.getLogger("multidb.gateway.audit")
AuditStatus = OutboxStatus


class AuditTrail(Outbox[AccessRecord]):
    """Access records to the logging service; :meth:`record` queues one (never blocks)."""

    def __init__(
        self,
        send: Send,
        *,
        capacity: int = 10_000,
        batch_size: int = 200,
        flush_interval_s: float = 0.2,
        max_backoff_s: float = 5.0,
    ) -> None:
        super().__init__(
            send,
            name="audit",
            noun="records",
            receiver="the logging service",
            logger=log,
            capacity=capacity,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            max_backoff_s=max_backoff_s,
        )

    def record(self, rec: AccessRecord) -> None:
        """Queue ``rec`` for delivery; when the buffer is full (or stopped), count it dropped."""
        self.put(rec)
