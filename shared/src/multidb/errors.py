"""Domain errors every part maps to HTTP problems; messages are safe to show to a caller."""

from __future__ import annotations

import asyncio
import traceback
from pathlib import Path

import asyncpg
from sqlalchemy.exc import DBAPIError


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


class MultiDBError(Exception):
    """An error with an HTTP status and a message a person understands."""

    status_code = 500
    title = "Internal error"

    def __init__(
        self, detail: str, *, headers: dict[str, str] | None = None, **extra: object
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        self.extra = extra


class BadRequestError(MultiDBError):
    status_code = 400
    title = "Bad request"


class SQLError(MultiDBError):
    status_code = 400
    title = "SQL error"


class ResultTooLargeError(MultiDBError):
    """A single row of the result is larger than the whole answer may be."""

    status_code = 400
    title = "Result too large"


class ForbiddenError(MultiDBError):
    status_code = 403
    title = "Forbidden"


class NotFoundError(MultiDBError):
    status_code = 404
    title = "Not found"


class ConflictError(MultiDBError):
    """The request cannot run now: something it conflicts with is running."""

    status_code = 409
    title = "Conflict"


class PayloadTooLargeError(MultiDBError):
    """The request body, or the batch it holds, is larger than a limit allows."""

    status_code = 413
    title = "Payload too large"


class UnsupportedMediaTypeError(MultiDBError):
    """The request body is in a format the route does not read (its Content-Type)."""

    status_code = 415
    title = "Unsupported media type"


class TooManyRequestsError(MultiDBError):
    """The caller already runs as many statements as it may; it should retry later."""

    status_code = 429
    title = "Too many requests"


class BadGatewayError(MultiDBError):
    """A service behind the gateway answered something the gateway cannot pass on."""

    status_code = 502
    title = "Bad gateway"


class DatabaseUnavailableError(MultiDBError):
    status_code = 503
    title = "Database unavailable"


class CommitOutcomeUnknownError(DatabaseUnavailableError):
    """The server went away after COMMIT was sent: the write may have been applied."""

    title = "Commit outcome unknown"


class TimeoutExceededError(MultiDBError):
    status_code = 504
    title = "Timed out"


class DatabaseTLSError(ConnectionError):
    """A connection failed at its TLS step; the message is one line that names the role and
    the setting to look at (see :mod:`multidb.tls`), and holds no secret."""


# Exceptions that mean "the database cannot be reached", not "your SQL is wrong".
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidPasswordError,
    asyncpg.exceptions.TooManyConnectionsError,
    # The driver lost its place on a connection broken mid-operation; also a cluster
    # (several hosts) none of which accepts writes (TargetServerAttributeNotMatched).
    asyncpg.exceptions.InternalClientError,
)


FIXED_DESCRIPTIONS: dict[type[BaseException], str] = {
    # A cluster of several hosts none of which accepts writes: no primary right now.
    asyncpg.exceptions.TargetServerAttributeNotMatched: (
        "no primary: none of the hosts accepts writes (a failover may be under way)"
    ),
}


def describe(exc: BaseException, timeout_ms: int | None = None) -> str:
    """A one-line, secret-free description of why a database call failed."""
    if isinstance(exc, DBAPIError):  # SQLAlchemy wraps the driver's error: describe that one
        exc = exc.orig.__cause__ or exc.orig if exc.orig is not None else exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"timed out after {timeout_ms} ms" if timeout_ms else "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        # A TLS failure is the line to show already (it names the role and the setting).
        tls_line = str(exc) if isinstance(exc, DatabaseTLSError) else None
        return tls_line or f"cannot connect: {exc.strerror or type(exc).__name__}"
    if isinstance(exc, asyncpg.PostgresError):
        return f"{exc.sqlstate}: {exc.args[0] if exc.args else type(exc).__name__}"
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.ConnectionDoesNotExistError):
        return f"connection lost: {exc}"
    return FIXED_DESCRIPTIONS.get(type(exc), type(exc).__name__)


TRACE_FRAMES = 12


def trace(exc: BaseException) -> str:
    """``Type at file:line in function <- ...`` (innermost first): where ``exc`` was raised.

    Only the type and the frames: never the message, arguments or locals, which for
    driver errors may quote connection details. Safe to log anywhere.
    """
    frames = traceback.extract_tb(exc.__traceback__)[-TRACE_FRAMES:]
    where = " <- ".join(
        # The package folder and the file say where; the rest of the path is the machine's.
        f"{'/'.join(Path(frame.filename).parts[-2:])}:{frame.lineno} in {frame.name}"
        for frame in reversed(frames)
    )
    return f"{type(exc).__name__} at {where}" if where else type(exc).__name__
