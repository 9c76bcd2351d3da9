"""Settings from the environment (and an optional ``.env``), parsed once into frozen Structs.

Variable names are the spec's: ``DB_HOST DB_PORT DB_USERNAME DB_PASSWORD DB_NAME`` (plus
``DB_POOL_SIZE DB_MAX_OVERFLOW DB_ECHO``) for ``default``, and
``MULTI_DB_<ROLE>_HOST/PORT/USERNAME/PASSWORD/DATABASE/POOL_SIZE/MAX_OVERFLOW/ECHO`` for
every other role. A role is configured when its ``HOST`` is set; otherwise it is absent.
TLS to each database: ``DB_SSLMODE DB_SSLROOTCERT DB_SSLCERT DB_SSLKEY`` and
``MULTI_DB_<ROLE>_SSLMODE/SSLROOTCERT/SSLCERT/SSLKEY`` (see :mod:`multidb.tls`); the
password may come from a file instead, ``DB_PASSWORD_FILE`` / ``MULTI_DB_<ROLE>_PASSWORD_FILE``.

Replicas and clusters (see :mod:`multidb.replicas`): ``HOST`` may list several servers
(``h1:5432,h2:5433``), of which the writable one is the primary; ``REPLICAS`` lists streaming
replicas (``host:port,...``), reached with ``REPLICA_USERNAME``/``REPLICA_PASSWORD`` when set;
``MAX_REPLICA_LAG_MS`` is how far behind a replica may be and still serve reads.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from dotenv import dotenv_values
from sqlalchemy.engine import URL

from multidb import tls
from multidb.api_keys import KeysFileError, load_keys
from multidb.backups.policy import BackupSettings, load_backup_settings
from multidb.errors import SettingsError as SettingsError  # noqa: PLC0414 - re-exported
from multidb.files import read_secret_file
from multidb.jwt_keys import jwt_keys_from_env
from multidb.plugins import get_plugin_manager, get_roles
from multidb.roles import RoleSpec
from multidb.wire import BackupInfo

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
# HS256 keys shorter than the hash (RFC 7518 section 3.2) are refused for the internal secret.
InternalSecret = Annotated[str, msgspec.Meta(min_length=32)]
# Days of logs / of analytics events kept (whole daily partitions, see multidb.partitions).
LOG_RETENTION_DAYS = 30
EVENTS_RETENTION_DAYS = 90

DB_FIELDS = (
    "host",
    "port",
    "username",
    "password",
    "database",
    "pool_size",
    "max_overflow",
    "echo",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "password_file",
    "replicas",
    "replica_username",
    "replica_password",
    "max_replica_lag_ms",
)
# A server's place: (host, port).
Address = tuple[str, int]


def parse_addresses(text: str, default_port: int, variable: str) -> tuple[Address, ...]:
    """``h1:5432,h2,[::1]:5433`` as addresses (a missing port is ``default_port``);
    :class:`SettingsError` naming ``variable`` for anything else."""
    found: list[Address] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            msg = f"{variable}: an empty entry in {text!r} (a comma-separated host:port list)"
            raise SettingsError(msg)
        host, port = entry, str(default_port)
        if entry.startswith("["):  # [IPv6]:port
            host, _, rest = entry[1:].partition("]")
            if rest:
                port = rest.removeprefix(":")
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            msg = f"{variable}: {entry!r} is not host:port with a port from 1 to 65535"
            raise SettingsError(msg)
        if (host, int(port)) in found:
            msg = f"{variable}: {entry!r} is listed twice"
            raise SettingsError(msg)
        found.append((host, int(port)))
    return tuple(found)


def address_text(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class DatabaseSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where one role's database is and how to pool connections to it."""

    host: str
    database: str
    port: Port = 5432
    username: str = "postgres"
    password: str = ""
    pool_size: Positive = 5
    max_overflow: NonNegative = 10
    echo: bool = False
    sslmode: tls.SslMode = "prefer"
    sslrootcert: str = ""
    sslcert: str = ""
    sslkey: str = ""
    # Streaming replicas as "host:port" (see multidb.replicas), their login when it differs.
    replicas: tuple[str, ...] = ()
    replica_username: str = ""
    replica_password: str = ""
    max_replica_lag_ms: NonNegative = 5000
    # Which role and variables these came from: for error lines that name the setting.
    role: str = ""
    env_prefix: str = ""

    def __repr__(self) -> str:
        # The password never reaches a repr, so it never reaches a log line or a traceback.
        return f"DatabaseSettings({self.display_url})"

    @property
    def addresses(self) -> tuple[Address, ...]:
        """The servers ``HOST`` names, in order (one, or the nodes of a cluster)."""
        return parse_addresses(self.host, self.port, self.variable("host"))

    @property
    def is_cluster(self) -> bool:
        """Whether ``HOST`` lists several servers, the primary being the writable one."""
        return "," in self.host

    @property
    def replica_addresses(self) -> tuple[Address, ...]:
        return tuple(
            address
            for entry in self.replicas
            for address in parse_addresses(entry, self.port, self.variable("replicas"))
        )

    def node(self, address: Address, *, replica: bool = False) -> DatabaseSettings:
        """These settings for the one server at ``address`` (a replica's login if asked)."""
        host, port = address
        changes: dict[str, Any] = {"host": host, "port": port, "replicas": ()}
        if replica:
            changes["username"] = self.replica_username or self.username
            changes["password"] = self.replica_password or self.password
        return msgspec.structs.replace(self, **changes)

    def url(self, drivername: str = "postgresql+asyncpg") -> URL:
        """The SQLAlchemy URL; a cluster's names its first server only, since engines
        connect through :attr:`connect_arguments` (every server, the writable one)."""
        host, port = self.addresses[0] if self.is_cluster else (self.host, self.port)
        return URL.create(
            drivername,
            username=self.username,
            password=self.password or None,
            host=host,
            port=port,
            database=self.database,
        )

    @property
    def connect_arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect`` / ``asyncpg.create_pool``, TLS included
        (the certificate files are read now: :class:`SettingsError` if one is unusable).
        A cluster's connections go to whichever of its servers accepts writes."""
        where: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.is_cluster:
            addresses = self.addresses
            where = {
                "host": [host for host, _ in addresses],
                "port": [port for _, port in addresses],
                "target_session_attrs": "read-write",
            }
        return {
            **where,
            "user": self.username,
            "password": self.password or None,
            "database": self.database,
            **tls.connect_options(self),
        }

    def connector(self) -> tls.Connect:
        """``asyncpg.connect`` whose TLS failures are one line naming the role and setting."""
        return tls.connector(self)

    async def connect(self, **overrides: Any) -> asyncpg.Connection:
        """One asyncpg connection with these settings (the caller closes it)."""
        return await self.connector()(**{**self.connect_arguments, **overrides})

    def variable(self, field: str) -> str:
        """The environment variable ``field`` came from (the field's name if unknown)."""
        return f"{self.env_prefix}{field.upper()}" if self.env_prefix else field

    def libpq_environment(self) -> dict[str, str]:
        """``PGHOST``, ``PGSSLMODE``, ``PGSSLROOTCERT``, ... for libpq tools; never the password."""
        return tls.libpq_environment(self)

    def backup_info(self) -> BackupInfo:
        """Where the data lives and how it is reached: the url redacted, certificate paths
        at most (never a key's content), no password."""
        return BackupInfo(
            host=self.host,
            port=self.port,
            database=self.database,
            username=self.username,
            url=self.display_url,
            sslmode=self.sslmode,
            sslrootcert=self.sslrootcert or None,
            sslcert=self.sslcert or None,
            sslkey=self.sslkey or None,
        )

    @property
    def display_url(self) -> str:
        """``postgresql://user:***@host:port/db`` (a cluster: ``@h1:p1,h2:p2``, as libpq
        writes it): safe to show anywhere."""
        shown = self.url("postgresql").render_as_string(hide_password=True)
        if not self.is_cluster:
            return shown
        first = address_text(self.addresses[0])
        hosts = ",".join(address_text(address) for address in self.addresses)
        return shown.replace(f"@{first}/", f"@{hosts}/", 1)


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a multidb process reads from its environment."""

    databases: dict[str, DatabaseSettings]
    routing: dict[str, str] = msgspec.field(default_factory=dict)
    execute_timeout_ms: Positive = 5000
    execute_max_rows: Positive = 1000
    execute_max_bytes: Positive = 8 * 1024 * 1024
    execute_max_query_bytes: Positive = 256 * 1024
    execute_queue_timeout_ms: Positive = 1000
    execute_concurrency_per_caller: Positive = 8
    execute_work_mem_kb: Annotated[int, msgspec.Meta(ge=64)] = 16 * 1024
    execute_temp_file_limit_kb: Annotated[int, msgspec.Meta(ge=-1)] = 256 * 1024
    execute_idle_in_transaction_ms: Positive = 10_000
    execute_connection_limit: Positive = 20
    # How long a read carrying min_lsn waits for a replica to replay it (multidb.replicas).
    read_your_writes_wait_ms: NonNegative = 1000
    request_max_bytes: Positive = 4 * 1024 * 1024
    # The ingestion APIs' limits; see multidb.ingest.
    ingest_max_records: Positive = 10_000
    ingest_max_bytes: Positive = 8 * 1024 * 1024
    ingest_max_field_bytes: Positive = 64 * 1024
    health_timeout_ms: Positive = 2000
    stats_retention_days: Positive = 30
    log_retention_days: Positive = LOG_RETENTION_DAYS
    events_retention_days: Positive = EVENTS_RETENTION_DAYS
    metrics_sample_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    metrics_access: Literal["loopback", "credential"] = "loopback"
    jwt_secret: str = ""
    # kid -> secret, newest first (JWT_SECRETS); see multidb.jwt_keys.
    jwt_keys: dict[str, str] = msgspec.field(default_factory=dict)
    service_secret: InternalSecret = ""
    api_keys: tuple[str, ...] = ()
    # MULTI_DB_API_KEYS_FILE: named keys with their scopes; see multidb.api_keys.
    api_keys_file: str = ""
    # MULTI_DB_BACKUP_DIR and each role's schedule; see multidb.backups.policy.
    backups: BackupSettings = msgspec.field(default_factory=BackupSettings)
    # Plugins' own settings by name (the multidb_plugin_settings hook): the archive's mover.
    plugins: dict[str, Any] = msgspec.field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Settings(databases={sorted(self.databases)}, routing={self.routing})"


# Process-wide knobs: (variable, Settings field).
GLOBAL_VARIABLES = (
    ("MULTI_DB_EXECUTE_TIMEOUT_MS", "execute_timeout_ms"),
    ("MULTI_DB_EXECUTE_MAX_ROWS", "execute_max_rows"),
    ("MULTI_DB_EXECUTE_MAX_BYTES", "execute_max_bytes"),
    ("MULTI_DB_EXECUTE_MAX_QUERY_BYTES", "execute_max_query_bytes"),
    ("MULTI_DB_EXECUTE_QUEUE_TIMEOUT_MS", "execute_queue_timeout_ms"),
    ("MULTI_DB_EXECUTE_CONCURRENCY_PER_CALLER", "execute_concurrency_per_caller"),
    ("MULTI_DB_EXECUTE_WORK_MEM_KB", "execute_work_mem_kb"),
    ("MULTI_DB_EXECUTE_TEMP_FILE_LIMIT_KB", "execute_temp_file_limit_kb"),
    ("MULTI_DB_EXECUTE_IDLE_IN_TRANSACTION_MS", "execute_idle_in_transaction_ms"),
    ("MULTI_DB_EXECUTE_CONNECTION_LIMIT", "execute_connection_limit"),
    ("MULTI_DB_READ_YOUR_WRITES_WAIT_MS", "read_your_writes_wait_ms"),
    ("MULTI_DB_REQUEST_MAX_BYTES", "request_max_bytes"),
    ("MULTI_DB_INGEST_MAX_RECORDS", "ingest_max_records"),
    ("MULTI_DB_INGEST_MAX_BYTES", "ingest_max_bytes"),
    ("MULTI_DB_INGEST_MAX_FIELD_BYTES", "ingest_max_field_bytes"),
    ("MULTI_DB_HEALTH_TIMEOUT_MS", "health_timeout_ms"),
    ("MULTI_DB_STATS_RETENTION_DAYS", "stats_retention_days"),
    ("MULTI_DB_LOG_RETENTION_DAYS", "log_retention_days"),
    ("MULTI_DB_EVENTS_RETENTION_DAYS", "events_retention_days"),
    ("MULTI_DB_METRICS_SAMPLE_S", "metrics_sample_s"),
    ("MULTI_DB_METRICS_ACCESS", "metrics_access"),
    ("JWT_SECRET", "jwt_secret"),
    ("MULTI_DB_SERVICE_SECRET", "service_secret"),
)
# The gateway's port unless MULTI_DB_GATEWAY_PORT says otherwise.
GATEWAY_PORT = 8000

METRICS_ACCESS_MODES = ("loopback", "credential")
# Fields whose value never appears in an error message, however malformed.
SECRET_FIELDS = frozenset({"password", "replica_password", "jwt_secret", "service_secret"})


def variable_name(spec: RoleSpec, field: str) -> str:
    """The environment variable that sets ``field`` of ``spec``'s database settings."""
    suffix = spec.env_database_key if field == "database" else field.upper()
    return f"{spec.prefix}{suffix}"


def convert_env(raw: Mapping[str, Any], target: type[Any], names: Mapping[str, str]) -> Any:
    """``msgspec.convert`` of environment strings; errors name the variable (``names``)."""
    try:
        return msgspec.convert(raw, target, strict=False)
    except msgspec.ValidationError as exc:
        # msgspec says "... - at `$.port`"; name the environment variable instead.
        message, _, where = str(exc).rpartition(" - at `$.")
        field = where.rstrip("`").split(".")[0].split("[")[0]
        name = names.get(field)
        if name is None or not message:
            raise SettingsError(str(exc)) from None
        value = raw.get(field)
        shown = "" if value is None or field in SECRET_FIELDS else f" (got {value!r})"
        raise SettingsError(f"{name}: {message[0].lower()}{message[1:]}{shown}") from None


def _database_settings(spec: RoleSpec, env: Mapping[str, str]) -> DatabaseSettings | None:
    names = {field: variable_name(spec, field) for field in DB_FIELDS}
    raw: dict[str, Any] = {
        field: env[name] for field, name in names.items() if env.get(name, "") != ""
    }
    if "host" not in raw:
        return None
    raw.setdefault("database", spec.database)
    raw.setdefault("pool_size", spec.pool_size)
    raw.setdefault("max_overflow", spec.max_overflow)
    password_file = raw.pop("password_file", None)
    if password_file is not None:
        if "password" in raw:
            msg = f"{names['password_file']}: set it or {names['password']}, not both"
            raise SettingsError(msg)
        raw["password"] = read_secret_file(names["password_file"], password_file)
    _check_tls(raw, names)
    raw.update(role=spec.name, env_prefix=spec.prefix)
    replicas = raw.pop("replicas", "")
    result: DatabaseSettings = convert_env(raw, DatabaseSettings, names)
    # Checked now, so that a bad HOST or REPLICAS list is one line at start-up.
    addresses = parse_addresses(result.host, result.port, names["host"])
    if len(addresses) == 1 and addresses[0] != (result.host, result.port):
        # One server written host:port: the same as HOST and PORT, for every client.
        (host, port), port_set = addresses[0], "port" in raw
        if port_set and port != result.port:
            msg = f"{names['host']}: port {port} differs from {names['port']}={result.port}"
            raise SettingsError(msg)
        result = msgspec.structs.replace(result, host=host, port=port)
    if replicas:
        parsed = parse_addresses(replicas, result.port, names["replicas"])
        result = msgspec.structs.replace(result, replicas=tuple(map(address_text, parsed)))
    return result


def _check_tls(raw: Mapping[str, Any], names: Mapping[str, str]) -> None:
    mode = raw.get("sslmode", "prefer")
    if mode not in tls.SSL_MODES:
        modes = ", ".join(tls.SSL_MODES)
        raise SettingsError(f"{names['sslmode']}: must be one of {modes} (got {mode!r})")
    if mode == "verify-ca" and "sslrootcert" not in raw:
        msg = (
            f"{names['sslmode']}: verify-ca needs {names['sslrootcert']}, the CA certificate "
            "to check the server's against"
        )
        raise SettingsError(msg)
    if "sslkey" in raw and "sslcert" not in raw:
        msg = f"{names['sslkey']}: a client key needs its certificate in {names['sslcert']}"
        raise SettingsError(msg)


def _routing(env: Mapping[str, str], roles: Mapping[str, RoleSpec]) -> dict[str, str]:
    text = env.get("MULTI_DB_ROUTING", "").strip()
    if not text:
        return {}
    try:
        routing = msgspec.json.decode(text, type=dict[str, str])
    except msgspec.DecodeError as exc:
        msg = f'MULTI_DB_ROUTING: must be a JSON object like {{"Model": "role"}} ({exc})'
        raise SettingsError(msg) from None
    for model, role in routing.items():
        if role not in roles:
            known = ", ".join(roles) or "none"
            msg = (
                f"MULTI_DB_ROUTING: model {model!r} is routed to unknown role {role!r} "
                f"(known: {known})"
            )
            raise SettingsError(msg)
    return routing


def _access_secrets(env: Mapping[str, str]) -> dict[str, Any]:
    """The JWT secrets (variables or files) and the API keys file, checked at start-up."""
    try:
        keys = jwt_keys_from_env(env)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    found: dict[str, Any] = {"jwt_keys": keys.by_kid}
    if keys.legacy:
        found["jwt_secret"] = keys.legacy
    keys_file = env.get("MULTI_DB_API_KEYS_FILE", "").strip()
    if keys_file:
        try:
            load_keys(Path(keys_file))
        except KeysFileError as exc:
            raise SettingsError(f"MULTI_DB_API_KEYS_FILE: {exc}") from None
        found["api_keys_file"] = keys_file
    return found


def load_settings(env: Mapping[str, str], roles: Mapping[str, RoleSpec]) -> Settings:
    """Parse ``env`` into :class:`Settings` for ``roles``; raise :class:`SettingsError`."""
    databases = {}
    for name, spec in roles.items():
        database = _database_settings(spec, env)
        if database is not None:
            databases[name] = database
    raw: dict[str, Any] = {
        field: env[var] for var, field in GLOBAL_VARIABLES if env.get(var, "") != ""
    }
    access = raw.get("metrics_access")
    if access is not None and access not in METRICS_ACCESS_MODES:
        modes = " or ".join(METRICS_ACCESS_MODES)
        raise SettingsError(f"MULTI_DB_METRICS_ACCESS: must be {modes} (got {access!r})")
    raw["databases"] = databases
    raw["routing"] = _routing(env, roles)
    raw["api_keys"] = [key.strip() for key in env.get("API_KEYS", "").split(",") if key.strip()]
    raw.update(_access_secrets(env))
    raw["backups"] = load_backup_settings(env, roles)
    result: Settings = convert_env(raw, Settings, {field: var for var, field in GLOBAL_VARIABLES})
    plugins: dict[str, Any] = {}
    for found in get_plugin_manager().hook.multidb_plugin_settings(env=env):
        plugins.update(found or {})
    # Set after the conversion: these are the plugins' own, already parsed, Structs.
    return msgspec.structs.replace(result, plugins=plugins) if plugins else result


def read_environment(env_file: str | Path | None = None) -> dict[str, str]:
    """The process environment over the ``.env`` file (``MULTI_DB_ENV_FILE`` or ``./.env``)."""
    path = Path(env_file or os.environ.get("MULTI_DB_ENV_FILE") or ".env")
    values = (
        {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}
    )
    values.update(os.environ)
    return values


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and ``.env``."""
    return load_settings(read_environment(), get_roles())
