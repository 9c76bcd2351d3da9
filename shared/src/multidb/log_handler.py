"""A :class:`logging.Handler` that ships an application's log records to the logging role.

    handler = LogShipper("http://gateway:8000/database/logging/logs", api_key=KEY)
    logging.getLogger().addHandler(handler)

The caller never waits on the network: :meth:`LogShipper.emit` freezes the message and puts
the record on a bounded queue (a few microseconds); a background thread sends batches as
one JSON array (``POST``, scope ``ingest:write``). What the service cannot take right now
is retried with exponential backoff, the same batch with the same ``event_id`` each time,
so a batch that reached the database before its answer was lost is stored once (the
service stores each ``event_id`` once). When the queue is full the record is dropped and
counted (:attr:`LogShipper.dropped`), with one warning per streak of drops on stderr;
:meth:`close` (called at interpreter exit too) sends what is queued, for at most
``shutdown_timeout_s``, and counts the rest as dropped.

Each record carries ``request_id`` (``extra={"request_id": ...}``) and every other
``extra`` field in ``context``; a record with ``exc_info`` carries the exception (type,
message, traceback), which the logging service also stores as an ``ErrorLog`` row.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import reprlib
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import msgspec

# Attributes every LogRecord has: what is not among them came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
# A 4xx other than these means the batch itself is refused: sending it again cannot help.
RETRIED_STATUSES = frozenset({408, 425, 429})
SELF = "multidb.log_handler"
# A batch the service answered 500 for is tried this many times, then counted as dropped.
FAILED_ATTEMPTS = 3
# How deep an ``extra`` value is copied; deeper (or cyclic) parts become their repr.
EXTRA_DEPTH = 8


class _Error(msgspec.Struct, omit_defaults=True):
    type: str
    message: str
    stack_trace: str | None = None


class _Wire(msgspec.Struct, omit_defaults=True):
    event_id: str
    timestamp: datetime
    level: str
    logger: str
    message: str
    request_id: str | None = None
    context: dict[str, Any] | None = None
    error: _Error | None = None


def _json_safe(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if depth < EXTRA_DEPTH and isinstance(value, dict):
        return {str(key): _json_safe(item, depth + 1) for key, item in value.items()}
    if depth < EXTRA_DEPTH and isinstance(value, list | tuple):
        return [_json_safe(item, depth + 1) for item in value]
    return reprlib.repr(value)


def _cut(text: str, max_bytes: int, *, keep_end: bool = False) -> str:
    """``text`` within ``max_bytes`` of UTF-8 (a traceback keeps its end: the error)."""
    if len(text) * 4 <= max_bytes or len(text.encode()) <= max_bytes:
        return text
    marker = "[...cut...]"
    room = max_bytes - len(marker.encode())
    if keep_end:
        return marker + text.encode()[-room:].decode(errors="ignore")
    return text.encode()[:room].decode(errors="ignore") + marker


class LogShipper(logging.Handler):
    """Sends log records to ``url`` (the gateway's ``/database/logging/logs`` or the logging
    service's ``/logs``) in batches, off the caller's thread."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        capacity: int = 10_000,
        batch_size: int = 1000,
        flush_interval_s: float = 1.0,
        timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
        shutdown_timeout_s: float = 5.0,
        max_field_bytes: int = 65_536,
        max_batch_bytes: int = 4 * 1024 * 1024,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        if not url.startswith(("http://", "https://")):
            msg = f"LogShipper: url must be http:// or https:// (got {url!r})"
            raise ValueError(msg)
        self.url = url
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["X-API-Key"] = api_key
        elif token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.shutdown_timeout_s = shutdown_timeout_s
        # The service's MULTI_DB_INGEST_MAX_FIELD_BYTES and below its MAX_BYTES (defaults).
        self.max_field_bytes = max_field_bytes
        self.max_batch_bytes = max_batch_bytes
        self._queue: queue.Queue[tuple[logging.LogRecord, str]] = queue.Queue(capacity)
        self._counts = threading.Lock()  # taken only when records are lost, never per record
        self._dropped = 0
        self._deadline = float("inf")  # when close() stops retrying
        self.sent = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="multidb-log-shipper", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # ---- the caller's side: cheap and never blocking -----------------------------------

    @property
    def dropped(self) -> int:
        """Records lost: the queue was full, the service refused their batch, or they were
        still unsent when :meth:`close` gave up."""
        return self._dropped

    def handle(self, record: logging.LogRecord) -> bool:
        # Without the handler's lock: emit only puts on a thread-safe queue.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == SELF:
            return
        if self._stop.is_set():
            self._drop(1, "the handler is closed")
            return
        try:
            # The message now: its arguments may change after this call returns.
            self._queue.put_nowait((record, record.getMessage()))
        except queue.Full:
            self._drop(1, "the queue is full")
        except Exception:
            self.handleError(record)

    def _drop(self, count: int, why: str) -> None:
        if count <= 0:
            return
        with self._counts:
            first = self._dropped == 0
            self._dropped += count
        if first:  # once: a log line per lost record would flood what is already failing
            sys.stderr.write(f"multidb LogShipper: dropping log records: {why}\n")

    # ---- the sender thread -------------------------------------------------------------

    def _wire(self, record: logging.LogRecord, message: str) -> bytes:
        """One record as JSON, within the service's limits (long text is cut, not refused,
        so one huge traceback never costs its batch)."""
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        request_id = extra.pop("request_id", None)
        error = None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            error = _Error(
                type=type(exc).__name__[:255],
                message=_cut(str(exc), self.max_field_bytes),
                stack_trace=_cut(
                    "".join(traceback.format_exception(exc)), self.max_field_bytes, keep_end=True
                ),
            )
        level = record.levelname if record.levelname in LEVELS else "INFO"
        context = _json_safe(extra) if extra else None
        if context is not None and len(msgspec.json.encode(context)) > self.max_field_bytes:
            context = {"context": "dropped: larger than the field limit"}
        return msgspec.json.encode(
            _Wire(
                event_id=uuid.uuid4().hex,
                timestamp=datetime.fromtimestamp(record.created, UTC),
                level=level,
                logger=record.name[:255],
                message=_cut(message, self.max_field_bytes),
                request_id=str(request_id)[:64] if request_id is not None else None,
                context=context,
                error=error,
            )
        )

    def _take(self, pending: list[bytes], wait_s: float) -> None:
        """Move queued records into ``pending``: at most ``batch_size`` of them and
        ``max_batch_bytes`` of JSON."""
        size = sum(len(item) + 1 for item in pending)
        with contextlib.suppress(queue.Empty):
            item = self._queue.get(timeout=wait_s)
            while True:
                try:
                    encoded = self._wire(*item)
                except Exception:  # a record that cannot be sent is counted, never fatal
                    self._drop(1, "a record could not be encoded")
                else:
                    pending.append(encoded)
                    size += len(encoded) + 1
                if len(pending) >= self.batch_size or size >= self.max_batch_bytes:
                    return
                item = self._queue.get_nowait()

    def _run(self) -> None:
        pending: list[bytes] = []
        backoff = 0.5
        failures = 0
        while True:
            try:
                if self._stop.is_set() and time.monotonic() > self._deadline:
                    self._drop(len(pending) + self._discard(), "unsent when the handler closed")
                    return
                if not pending:
                    if self._stop.is_set() and self._queue.empty():
                        return
                    self._take(pending, 0.05 if self._stop.is_set() else self.flush_interval_s)
                    if not pending:
                        continue
                outcome = self._send(pending)
                failures = failures + 1 if outcome == "failed" else 0
                if outcome == "sent":
                    self.sent += len(pending)
                    pending = []
                    backoff = 0.5
                elif outcome == "refused" or failures >= FAILED_ATTEMPTS:
                    why = f"the logging service refused a batch ({self.last_error})"
                    self._drop(len(pending), why)
                    pending, failures = [], 0
                else:
                    # Kept, same event ids: a retry stores each record once.
                    time.sleep(min(backoff, max(0.0, self._deadline - time.monotonic())))
                    backoff = min(backoff * 2, self.max_backoff_s)
            except Exception as exc:  # the thread must live: what it held is counted
                self._drop(len(pending), f"the sender failed ({type(exc).__name__})")
                pending = []

    def _discard(self) -> int:
        """Empty the queue; how many records it held."""
        count = 0
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
                count += 1
        return count

    def _send(self, batch: list[bytes]) -> str:
        """``sent``; ``refused`` (the batch itself is wrong: never again); ``failed`` (the
        service broke on it: a few more tries); ``retry`` (an outage: until it ends)."""
        body = b"[" + b",".join(batch) + b"]"
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url, data=body, headers=self.headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:  # noqa: S310
                answer.read()
        except urllib.error.HTTPError as exc:
            self.last_error = f"the logging service answered {exc.code}"
            if 400 <= exc.code < 500 and exc.code not in RETRIED_STATUSES:
                said = exc.read(300).decode(errors="replace")
                self.last_error = f"the logging service answered {exc.code}: {said}"
                return "refused"
            return "failed" if exc.code == HTTPStatus.INTERNAL_SERVER_ERROR else "retry"
        except (OSError, urllib.error.URLError) as exc:
            self.last_error = f"cannot reach the logging service: {exc}"
            return "retry"
        self.last_error = None
        return "sent"

    # ---- shutdown ------------------------------------------------------------------------

    def flush(self) -> None:
        """Wait (at most ``shutdown_timeout_s``) until what is queued now has been taken by
        the sender, which keeps retrying a batch the service has not taken yet."""
        deadline = time.monotonic() + self.shutdown_timeout_s
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        """Send what is queued, retrying for at most ``shutdown_timeout_s``, then stop; what
        is still unsent is counted in :attr:`dropped`."""
        if not self._stop.is_set():
            self._deadline = time.monotonic() + self.shutdown_timeout_s
            self._stop.set()
            # A request already in flight may take its own timeout to end.
            self._thread.join(self.shutdown_timeout_s + self.timeout_s + 1)
            if not self._thread.is_alive():
                # A record put just as the sender finished: not sent, so counted.
                self._drop(self._discard(), "unsent when the handler closed")
            with contextlib.suppress(Exception):
                atexit.unregister(self.close)
        super().close()
