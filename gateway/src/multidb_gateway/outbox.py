"""A typed outbox: items batched off the request path, delivered at least once.

:class:`Outbox` knows nothing about HTTP: it is given ``send``, an async callable that
delivers one JSON array of items and raises when it could not. A batch counts as
``sent`` only once ``send`` returned. A failed batch is kept (in order) and sent again
with exponential backoff, so an item may be delivered more than once; receivers store
each item once by its id (the audit trail's ``event_id``, a stats sample's
``sample_id``), which makes the whole pipeline exactly-once in the table. What does not
fit in the bounded buffer, or is still unsent when :meth:`Outbox.stop` gives up, is
counted in ``dropped``.

A receiver that answers and refuses (:class:`DeliveryRefusedError`: wrong credentials,
wrong address, items it will not take) is a misconfiguration, not an outage: it is
logged at error level once per streak, counted in ``rejected`` and shown by ``refusing``
until a batch goes through again.

Used by the audit trail (access records to the logging service) and the stats sampler
(samples to the analytics service); each gives its own name, logger and receiver, so its
log lines and ``/readyz`` entry read as its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import msgspec

from multidb.errors import trace

Send = Callable[[bytes], Awaitable[None]]
ERROR_TEXT_LIMIT = 200
T = TypeVar("T")


class DeliveryRefusedError(Exception):
    """The receiver answered and refused the batch: a misconfiguration, not an outage.

    ``batch_at_fault``: the receiver refused these items themselves, so sending them
    again cannot help and they are dropped; otherwise (credentials, address) the batch is
    kept and retried, since fixing the configuration lets it through.
    """

    def __init__(self, reason: str, *, batch_at_fault: bool = False) -> None:
        super().__init__(reason)
        self.batch_at_fault = batch_at_fault


class OutboxStatus(msgspec.Struct, kw_only=True):
    """``pending``: held, not yet delivered; ``sent``: delivered (the receiver took them);
    ``dropped``: lost (buffer full, refused as malformed, or unsent at stop);
    ``failures``: failed send attempts, refusals included; ``rejected``: attempts the
    receiver answered with a refusal; ``refusing``: the latest attempt was refused (a
    misconfiguration, until a batch goes through); ``last_error``: the latest failure
    (``Type: message``), kept after recovery."""

    pending: int
    sent: int
    dropped: int
    failures: int
    last_error: str | None
    rejected: int = 0
    refusing: bool = False


def describe_failure(exc: BaseException) -> str:
    text = str(exc)
    if len(text) > ERROR_TEXT_LIMIT:
        text = text[: ERROR_TEXT_LIMIT - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Outbox(Generic[T]):
    """Batches items and delivers them through ``send`` from one background task.

    Call :meth:`put` from the event loop's thread; it never blocks and never raises.
    A batch is sent when ``batch_size`` items are pending or ``flush_interval_s`` has
    passed since the last look. After a failure the same batch is retried first, waiting
    ``flush_interval_s``, then twice as long each time, up to ``max_backoff_s``.

    ``name`` starts every log line (``audit: ...``), ``noun`` names the items in them
    (``records``), ``receiver`` the service that takes them (``the logging service``).
    """

    def __init__(
        self,
        send: Send,
        *,
        name: str,
        noun: str,
        receiver: str,
        logger: logging.Logger,
        capacity: int = 10_000,
        batch_size: int = 200,
        flush_interval_s: float = 0.2,
        max_backoff_s: float = 5.0,
    ) -> None:
        if capacity < 1 or batch_size < 1 or flush_interval_s <= 0:
            msg = "capacity and batch_size must be at least 1, flush_interval_s above 0"
            raise ValueError(msg)
        self._send = send
        self._name = name
        self._noun = noun
        self._receiver = receiver
        self._log = logger
        self._capacity = capacity
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._max_backoff = max(max_backoff_s, flush_interval_s)
        self._encoder = msgspec.json.Encoder()
        self._pending: deque[T] = deque()
        self._wake = asyncio.Event()  # enough items for a batch, or stopping
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._overflowing = False
        self._streak: str | None = None  # what the current failure streak was logged as
        self._refusing = False
        self._rejected = 0
        self._sent = 0
        self._dropped = 0
        self._failures = 0
        self._last_error: str | None = None

    def put(self, item: T) -> None:
        """Queue ``item`` for delivery; when the buffer is full (or stopped), count it dropped."""
        if self._closed or len(self._pending) >= self._capacity:
            self._dropped += 1
            if not self._overflowing:
                self._overflowing = True
                why = "stopped" if self._closed else f"buffer full ({self._capacity} pending)"
                self._log.warning(
                    "%s: %s; dropping %s until there is room", self._name, why, self._noun
                )
            return
        self._overflowing = False
        self._pending.append(item)
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    async def start(self) -> None:
        """Start the background sender (once; later calls do nothing)."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name=f"multidb-outbox-{self._name}")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Deliver what is pending (best effort, within ``timeout_s``), then stop.

        Items still undelivered afterwards are counted in ``dropped``; items given to
        :meth:`put` after this call are dropped too.
        """
        self._closed = True
        self._closing.set()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"multidb-outbox-{self._name}")
        task = self._task
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pending:
            self._log.warning(
                "%s: stopped with %d %s undelivered", self._name, len(self._pending), self._noun
            )
            self._dropped += len(self._pending)
            self._pending.clear()

    def status(self) -> OutboxStatus:
        return OutboxStatus(
            pending=len(self._pending),
            sent=self._sent,
            dropped=self._dropped,
            failures=self._failures,
            last_error=self._last_error,
            rejected=self._rejected,
            refusing=self._refusing,
        )

    async def _run(self) -> None:
        backoff = self._interval
        while True:
            if not self._closing.is_set() and len(self._pending) < self._batch_size:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._wake.wait()
            if not self._pending:
                if self._closing.is_set():
                    return
                continue
            try:
                delivered = await self._deliver()
            except Exception as exc:  # a bug here must not end delivery for good
                self._log.error("%s: the sender failed unexpectedly: %s", self._name, trace(exc))
                delivered = False
            if delivered:
                backoff = self._interval
            else:
                await self._pause(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    async def _deliver(self) -> bool:
        """Send the oldest batch; drop it from the buffer only once ``send`` returned."""
        batch = list(itertools.islice(self._pending, self._batch_size))
        try:
            await self._send(self._encoder.encode(batch))
        except DeliveryRefusedError as exc:
            self._failed(exc, len(batch))
            if exc.batch_at_fault:
                self._discard(len(batch))
                self._dropped += len(batch)
            return False
        except Exception as exc:
            self._failed(exc, len(batch))
            return False
        self._discard(len(batch))
        self._sent += len(batch)
        self._refusing = False
        if self._streak is not None:
            self._streak = None
            self._log.info(
                "%s: delivering again; %d %s pending", self._name, len(self._pending), self._noun
            )
        return True

    def _discard(self, count: int) -> None:
        for _ in range(count):
            self._pending.popleft()

    def _failed(self, exc: Exception, size: int) -> None:
        """Count a failed attempt; log it once per streak (again when its reason changes)."""
        self._failures += 1
        self._last_error = describe_failure(exc)
        refused = isinstance(exc, DeliveryRefusedError)
        self._refusing = refused
        if refused:
            self._rejected += 1
        # A refusal is logged whenever its reason changes; an outage once until it ends.
        streak = self._last_error if refused else "unreachable"
        if streak == self._streak:
            self._log.debug(
                "%s: sending %d %s failed again (%s)",
                self._name,
                size,
                self._noun,
                self._last_error,
            )
            return
        self._streak = streak
        if isinstance(exc, DeliveryRefusedError):
            pending = len(self._pending)
            fate = "dropped" if exc.batch_at_fault else f"kept, {pending} pending, retrying"
            self._log.error(
                "%s: %s refused %d %s (%s); %s",
                self._name,
                self._receiver,
                size,
                self._noun,
                self._last_error,
                fate,
            )
        else:
            self._log.warning(
                "%s: sending %d %s failed (%s); %d pending, will retry",
                self._name,
                size,
                self._noun,
                self._last_error,
                len(self._pending),
            )

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` before a retry; a stop that begins meanwhile cuts the wait short."""
        if self._closing.is_set():
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closing.wait()
