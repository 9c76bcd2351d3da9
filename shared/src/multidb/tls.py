"""TLS to PostgreSQL: the one place that turns a role's settings into asyncpg's ``ssl=``
argument, and a TLS failure into one line naming the role and the setting to look at.

The modes are libpq's ``sslmode``:

- ``disable``: never TLS; ``allow``: plain text first, TLS if the server insists;
  ``prefer`` (the default): TLS when the server offers it. None of the three verifies
  anything (asyncpg's own negotiation, as libpq does it).
- ``require``: TLS or no connection; the server is not verified unless a root certificate
  is given, in which case its chain is checked (libpq's rule).
- ``verify-ca``: TLS, and the server's certificate chains to ``SSLROOTCERT`` (the host
  name is not checked). ``verify-full``: the chain and the host name; without
  ``SSLROOTCERT`` the chain is checked against the system's trusted CAs.

``SSLCERT``/``SSLKEY`` are a client certificate for servers that ask for one. Every
connection a role makes (SQLAlchemy engines, asyncpg pools, the execute logins, the
migrations, the CLI) goes through :func:`connector` with :func:`connect_options`.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import asyncpg

from multidb.errors import DatabaseTLSError, SettingsError

if TYPE_CHECKING:
    from multidb.settings import DatabaseSettings

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
SSL_MODES: tuple[SslMode, ...] = (
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
)
# Modes negotiated by asyncpg itself: encryption without verification, if at all.
NEGOTIATED = ("allow", "prefer")
VERIFYING = ("verify-ca", "verify-full")
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH.
NAME_MISMATCH = frozenset({62, 64})
# What PostgreSQL says (28000) when pg_hba.conf wants what the client did not bring.
WITHOUT_TLS = "no encryption"
CLIENT_CERTIFICATE = "certificate"

Connect = Callable[..., Awaitable[asyncpg.Connection]]


def ssl_argument(database: DatabaseSettings) -> ssl.SSLContext | str | bool:
    """asyncpg's ``ssl=`` for ``database``: ``False``, a negotiated mode, or a context.

    Reads the certificate files now; one that cannot be used raises :class:`SettingsError`
    naming its variable.
    """
    mode = database.sslmode
    if mode == "disable":
        return False
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if mode in NEGOTIATED:
        if database.sslcert:  # asyncpg loads it (connect_options); an unusable one fails now
            _load_client_certificate(database, context)
        return mode
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = mode == "verify-full"
    if database.sslrootcert:
        _load(database, "sslrootcert", lambda: context.load_verify_locations(database.sslrootcert))
    elif mode in VERIFYING:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:  # require without a root certificate: encrypted, not verified (as libpq does)
        context.verify_mode = ssl.CERT_NONE
    if database.sslcert:
        _load_client_certificate(database, context)
    if ssl.HAS_ALPN:
        context.set_alpn_protocols(["postgresql"])
    return context


def connect_options(database: DatabaseSettings) -> dict[str, Any]:
    """The TLS keyword arguments of ``asyncpg.connect`` for ``database``."""
    options: dict[str, Any] = {"ssl": ssl_argument(database)}
    if database.sslmode in NEGOTIATED and database.sslcert:
        # asyncpg takes a negotiated mode's client certificate from the DSN only; host,
        # port and login still come from the keyword arguments.
        query = {"sslcert": database.sslcert, "sslkey": database.sslkey or database.sslcert}
        options["dsn"] = "postgresql://?" + urllib.parse.urlencode(query)
    return options


def _load(database: DatabaseSettings, field: str, load: Callable[[], object]) -> None:
    path = getattr(database, field)
    try:
        load()
    except ssl.SSLError as exc:  # before OSError, of which it is one
        reason = _reason(exc)
        msg = f"{database.variable(field)}: no usable certificate in {path} ({reason})"
        raise SettingsError(msg) from None
    except OSError as exc:
        detail = exc.strerror or type(exc).__name__
        msg = f"{database.variable(field)}: cannot read {path}: {detail}"
        raise SettingsError(msg) from None


def _load_client_certificate(database: DatabaseSettings, context: ssl.SSLContext) -> None:
    key = database.sslkey or None

    def no_passphrase() -> bytes:
        # Without this OpenSSL would prompt on the terminal for an encrypted key's passphrase.
        msg = f"{database.variable('sslkey')}: the key is encrypted; give an unencrypted key"
        raise SettingsError(msg)

    try:
        context.load_cert_chain(database.sslcert, key, password=no_passphrase)
    except ssl.SSLError as exc:  # before OSError, of which it is one
        msg = (
            f"{database.variable('sslcert')}: cannot use the client certificate "
            f"{database.sslcert} with its key ({_reason(exc)})"
        )
        raise SettingsError(msg) from None
    except OSError as exc:
        # Python does not say which of the two files is missing: name the one that is.
        field = "sslkey" if key is not None and not os.path.exists(key) else "sslcert"
        detail = exc.strerror or type(exc).__name__
        msg = f"{database.variable(field)}: cannot read {getattr(database, field)}: {detail}"
        raise SettingsError(msg) from None


def _reason(exc: ssl.SSLError) -> str:
    reason = exc.reason or (exc.args[1] if len(exc.args) > 1 else type(exc).__name__)
    return str(reason).lower().replace("_", " ")


def failure(database: DatabaseSettings, exc: BaseException) -> DatabaseTLSError | None:
    """The TLS failure ``exc`` is, as one line naming the role and the setting; ``None``
    when ``exc`` is about something else (a refused connection, a wrong password, ...)."""
    role = database.role or "database"
    mode = f"{database.variable('sslmode')}={database.sslmode}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in NAME_MISMATCH:
            host = database.host
            line = (
                f"{role}: TLS: host name {host} does not match the server certificate "
                f"({database.variable('host')}={host}, {mode})"
            )
        else:
            reason = exc.verify_message
            line = f"{role}: TLS: certificate verify failed: {reason} ({_roots(database)})"
    elif isinstance(exc, ssl.SSLError):
        reason = _reason(exc)
        if "certificate required" in reason:
            reason = "the server requires a client certificate"
        line = f"{role}: TLS: {reason} ({mode}{_client(database)})"
    elif type(exc) is ConnectionError and "SSL" in str(exc):
        # asyncpg: the server answered the TLS request with "no" or with an error.
        said = "does not offer TLS" if "rejected" in str(exc) else "refused the TLS request"
        line = f"{role}: TLS: the server {said} ({mode})"
    elif isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        message = str(exc)
        if WITHOUT_TLS in message:
            line = f"{role}: TLS: the server requires TLS, which {mode} does not use ({message})"
        elif CLIENT_CERTIFICATE in message:
            line = f"{role}: TLS: {message} ({mode}{_client(database)})"
        else:
            return None
    else:
        return None
    return DatabaseTLSError(line)


def _roots(database: DatabaseSettings) -> str:
    variable = database.variable("sslrootcert")
    if database.sslrootcert:
        return f"{variable}={database.sslrootcert}"
    return f"{variable} unset: the system's trusted CAs"


def _client(database: DatabaseSettings) -> str:
    variable = database.variable("sslcert")
    return f", {variable}={database.sslcert}" if database.sslcert else f", {variable} unset"


def connector(database: DatabaseSettings) -> Connect:
    """``asyncpg.connect`` that turns a TLS failure into :class:`DatabaseTLSError` (pools take
    it as ``connect=``; SQLAlchemy engines call it from their ``async_creator``)."""

    async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(*args, **kwargs)
        except Exception as exc:
            translated = failure(database, exc)
            if translated is None:
                raise
            raise translated from None

    return connect


def libpq_environment(database: DatabaseSettings) -> dict[str, str]:
    """The same settings for libpq's tools (``pg_dump``, ``psql``): never the password."""
    addresses = database.addresses
    env = {
        "PGHOST": ",".join(host for host, _ in addresses),
        "PGPORT": ",".join(str(port) for _, port in addresses),
        "PGUSER": database.username,
        "PGDATABASE": database.database,
        "PGSSLMODE": database.sslmode,
    }
    if database.is_cluster:
        env["PGTARGETSESSIONATTRS"] = "read-write"  # the primary, as our own connections
    if database.sslrootcert:
        env["PGSSLROOTCERT"] = database.sslrootcert
    elif database.sslmode == "verify-full":
        env["PGSSLROOTCERT"] = "system"  # libpq 16: the system's trusted CAs, as we do
    if database.sslcert:
        env["PGSSLCERT"] = database.sslcert
        env["PGSSLKEY"] = database.sslkey or database.sslcert
    return env
