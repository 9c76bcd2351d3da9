"""How every multidb process logs: JSON lines, or a human format on a terminal.

Each entry point (a role service, the gateway, the ``multidb`` CLI) calls
:func:`configure_logging` once, first thing. It puts one stdlib handler on the root logger
whose formatter is structlog's ``ProcessorFormatter``, so every ``logging.getLogger(...)``
call, the fields passed as ``extra={...}`` and third-party loggers (uvicorn, asyncpg,
alembic) all come out as the same lines. Each line carries ``timestamp`` (ISO 8601, UTC),
``level``, ``logger``, ``process`` and ``role`` (where there is one), ``request_id`` while a
request is handled (bound by :class:`multidb.request_id.RequestIdMiddleware`), the message
as ``event``, and the extra fields.

An exception attached to a record (``exc_info``, ``log.exception``) is written as its type
and frames only (:func:`multidb.errors.trace`), never its message: driver errors may quote
connection details, and a log line must never hold a secret.

``MULTI_DB_LOG_FORMAT``: ``auto`` (human on a terminal, JSON otherwise), ``json``, ``human``.
``MULTI_DB_LOG_LEVEL``: ``DEBUG``, ``INFO`` (default), ``WARNING``, ``ERROR``, ``CRITICAL``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, Literal, TextIO, get_args

import msgspec
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from multidb.errors import trace
from multidb.settings import SettingsError

FORMAT_VARIABLE = "MULTI_DB_LOG_FORMAT"
LEVEL_VARIABLE = "MULTI_DB_LOG_LEVEL"
LOG_VARIABLES = (FORMAT_VARIABLE, LEVEL_VARIABLE)

LogFormat = Literal["auto", "json", "human"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

# Third-party loggers that are chatty at INFO; they speak at DEBUG only when asked for it.
QUIET_LOGGERS = ("uvicorn.error", "alembic")
# Loggers that say nothing an operator needs even at DEBUG (faker: Litestar's OpenAPI examples).
SILENT_LOGGERS = ("faker",)
# Keys that say how to render, not what happened (uvicorn's coloured copy of the message).
_DROPPED_KEYS = ("color_message", "positional_args")
# The leading keys of every line, in this order; the extra fields follow.
_LEADING_KEYS = ("timestamp", "level", "logger", "process", "role", "request_id", "event")


class LogSettings(msgspec.Struct, frozen=True, kw_only=True):
    format: LogFormat = "auto"
    level: LogLevel = "INFO"


def load_log_settings(env: Mapping[str, str]) -> LogSettings:
    """The two settings from ``env``; a bad value is a :class:`SettingsError` naming it."""
    fmt = env.get(FORMAT_VARIABLE, "").strip().lower() or "auto"
    level = env.get(LEVEL_VARIABLE, "").strip().upper() or "INFO"
    for variable, value, allowed in (
        (FORMAT_VARIABLE, fmt, get_args(LogFormat)),
        (LEVEL_VARIABLE, level, get_args(LogLevel)),
    ):
        if value not in allowed:
            msg = f"{variable}: must be one of {', '.join(allowed)} (got {value!r})"
            raise SettingsError(msg)
    return LogSettings(format=fmt, level=level)  # type: ignore[arg-type]


def resolve_format(chosen: LogFormat, stream: TextIO) -> Literal["json", "human"]:
    """``auto`` made concrete: human when ``stream`` is a terminal, JSON lines otherwise."""
    if chosen == "auto":
        return "human" if stream.isatty() else "json"
    return chosen


def _record_timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # The time the record was made, not the time it was formatted.
    record: logging.LogRecord | None = event_dict.get("_record")
    created = record.created if record is not None else time.time()
    stamp = dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds")
    event_dict["timestamp"] = stamp.replace("+00:00", "Z")
    return event_dict


def _safe_exception(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """``exc_info`` becomes ``exception``: the type and where it was raised, no message."""
    exc_info = event_dict.pop("exc_info", None)
    exc: BaseException | None = None
    if isinstance(exc_info, BaseException):
        exc = exc_info
    elif isinstance(exc_info, tuple):
        exc = exc_info[1]
    elif exc_info:
        exc = sys.exc_info()[1]
    if exc is not None:
        event_dict["exception"] = trace(exc)
    return event_dict


def _identify(process: str, role: str | None) -> Processor:
    def identify(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        for key in _DROPPED_KEYS:
            event_dict.pop(key, None)
        event_dict["process"] = process
        if role is not None:
            event_dict.setdefault("role", role)
        return event_dict

    return identify


def _ordered(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    leading = {key: event_dict.pop(key) for key in _LEADING_KEYS if key in event_dict}
    return {**leading, **event_dict}


def _human_who(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Five processes share a terminal under `make run`: say whose line it is up front.
    process = event_dict.pop("process", "")
    who = event_dict.pop("role", None) or process
    event_dict["logger"] = f"{who} {event_dict.get('logger', '')}".strip()
    return event_dict


def formatter(
    process: str, role: str | None, fmt: Literal["json", "human"], colours: bool = False
) -> structlog.stdlib.ProcessorFormatter:
    """The formatter of every line of this process (exposed for tests)."""
    pre_chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
    ]
    common: list[Processor] = [
        _record_timestamp,
        _safe_exception,
        _identify(process, role),
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
    ]
    renderer: list[Processor]
    if fmt == "json":
        renderer = [_ordered, structlog.processors.JSONRenderer(default=repr)]
    else:
        renderer = [
            _human_who,
            structlog.dev.ConsoleRenderer(colors=colours, sort_keys=False, pad_event_to=24),
        ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain, processors=[*common, *renderer]
    )


def configure_logging(
    process: str,
    role: str | None = None,
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> LogSettings:
    """Send every log record of this process to ``stream`` (stderr) in the chosen format.

    Raises :class:`SettingsError` for a bad value of either setting; the caller prints
    it as its one start-up line. Returns the settings with the format made concrete, for
    a supervisor to hand down to its children.
    """
    settings = load_log_settings(env if env is not None else {})
    out = stream or sys.stderr
    fmt = resolve_format(settings.format, out)
    level = logging.getLevelNamesMapping()[settings.level]
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter(process, role, fmt, colours=fmt == "human" and out.isatty()))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.NOTSET if level <= logging.DEBUG else logging.WARNING
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    for name in SILENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    # structlog's own loggers, should any code use them, end in the same handler.
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return LogSettings(format=fmt, level=settings.level)


@contextlib.contextmanager
def execute_line(logger: logging.Logger, **fields: Any) -> Iterator[dict[str, Any]]:
    """One ``execute`` line when the block ends: outcome, status_code, rows, duration_ms.

    The block sets ``line["rows"]`` when there is an answer, and ``status_code`` /
    ``outcome`` when it answers an error without raising. An exception leaving the block
    makes the outcome its class name and the status its ``status_code`` (500 without
    one). Fields are the caller's: never the statement's parameters or a credential.
    """
    line: dict[str, Any] = {"outcome": "ok", "status_code": 200, "rows": None, **fields}
    started = time.perf_counter()
    try:
        yield line
    except BaseException as exc:
        line["outcome"] = type(exc).__name__
        line["status_code"] = getattr(exc, "status_code", 500)
        raise
    finally:
        line["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        level = logging.WARNING if line["status_code"] >= 500 else logging.INFO
        logger.log(level, "execute", extra=line)
