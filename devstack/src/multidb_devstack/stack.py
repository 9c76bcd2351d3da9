"""The local stack in one command (``make run`` / ``multidb up``).

PostgreSQL, migrations, every role's service and the gateway, each service its own
process. When the environment (or ``.env``) names database servers, those are used;
otherwise an embedded PostgreSQL runs from ``.data/pg`` (kept between runs), with
``MULTI_DB_EMBEDDED_REPLICAS`` streaming replicas of it in ``.data/pg-replica-<n>`` (kept
too) that every role's ``<prefix>REPLICAS`` names. A
development API key, JWT secret and internal service secret are generated once into
``.data/credentials.json`` unless ``API_KEYS``/``JWT_SECRET``/``MULTI_DB_SERVICE_SECRET``
are set. A crashed process is restarted with backoff;
Ctrl-C (SIGINT) or SIGTERM stops everything this started, PostgreSQL included.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType

import msgspec

from multidb import migrations
from multidb.files import write_private
from multidb.logs import FORMAT_VARIABLE, load_log_settings, resolve_format
from multidb.plugins import get_roles
from multidb.roles import RoleSpec
from multidb.settings import (
    GATEWAY_PORT,
    SettingsError,
    load_settings,
    read_environment,
    variable_name,
)
from multidb_devstack.embedded import EmbeddedPostgres, wait_streaming

log = logging.getLogger("multidb_devstack.stack")

READY_TIMEOUT_S = 60.0
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
GATEWAY = "gateway"
REPLICAS_VARIABLE = "MULTI_DB_EMBEDDED_REPLICAS"
# One replica is what anyone needs to see reads go elsewhere; each costs a server's memory.
MAX_EMBEDDED_REPLICAS = 3
STREAMING_TIMEOUT_S = 30.0


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    api_key: str
    jwt_secret: str
    service_secret: str = ""  # absent from files written before it existed

    def environment(self) -> dict[str, str]:
        return {
            "API_KEYS": self.api_key,
            "JWT_SECRET": self.jwt_secret,
            "MULTI_DB_SERVICE_SECRET": self.service_secret,
        }


def load_credentials(folder: Path) -> Credentials:
    """The development credentials, made once and kept in ``folder`` (completed if older)."""
    path = folder / "credentials.json"
    if path.exists():
        found = msgspec.json.decode(path.read_bytes(), type=Credentials)
        if found.service_secret:
            return found
        made = msgspec.structs.replace(found, service_secret=secrets.token_urlsafe(48))
    else:
        made = Credentials(
            api_key=secrets.token_urlsafe(24),
            jwt_secret=secrets.token_urlsafe(48),
            service_secret=secrets.token_urlsafe(48),
        )
    write_private(path, msgspec.json.encode(made))
    return made


def names_servers(env: Mapping[str, str], roles: Mapping[str, RoleSpec]) -> bool:
    """Whether the environment points any role at a database server of its own."""
    return any(env.get(variable_name(spec, "host")) for spec in roles.values())


def embedded_replica_count(env: Mapping[str, str]) -> int:
    """``MULTI_DB_EMBEDDED_REPLICAS``: how many replicas of the embedded cluster to run."""
    raw = env.get(REPLICAS_VARIABLE, "").strip()
    if not raw:
        return 0
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_EMBEDDED_REPLICAS:
        msg = (
            f"{REPLICAS_VARIABLE}: must be a whole number from 0 to {MAX_EMBEDDED_REPLICAS} "
            f"(got {raw!r})"
        )
        raise SettingsError(msg)
    return int(raw)


def replicas_environment(roles: Mapping[str, RoleSpec], addresses: Sequence[str]) -> dict[str, str]:
    """Every role's ``<prefix>REPLICAS`` naming the replicas at ``addresses`` (``host:port``):
    all roles share the embedded cluster, so its replicas serve every role."""
    if not addresses:
        return {}
    listed = ",".join(addresses)
    return {variable_name(spec, "replicas"): listed for spec in roles.values()}


def start_replicas(
    primary: EmbeddedPostgres, folder: Path, count: int, say: Callable[[str], None]
) -> list[EmbeddedPostgres]:
    """Start ``count`` streaming replicas of the running ``primary`` in
    ``folder/pg-replica-<n>`` (made there once, reused after), and return once each
    streams. One that fails stops those started before it."""
    replicas: list[EmbeddedPostgres] = []
    try:
        for number in range(1, count + 1):
            path = folder / f"pg-replica-{number}"
            replica = primary.create_replica(path)
            replicas.append(replica)
            replica.start()
            say(f"started replica {number} of the embedded PostgreSQL in {path}: {replica.address}")
        asyncio.run(wait_streaming(primary, replicas, STREAMING_TIMEOUT_S))
    except BaseException:
        _stop_all(replicas)
        raise
    return replicas


def _stop_all(servers: Sequence[EmbeddedPostgres]) -> None:
    """Stop ``servers``, the last first; one that fails to stop does not keep the others up."""
    with contextlib.ExitStack() as stopping:
        for server in servers:
            stopping.callback(server.stop)


class AlreadyRunningError(RuntimeError):
    pass


class StackLock:
    """``.data/stack.pid``: one stack per folder, locked (``flock``) for the stack's life.

    The kernel holds the lock, not the file's content: of two ``multidb up`` racing, one
    gets it and the other is refused; a stack that dies, even by SIGKILL, releases it with
    its last file descriptor, so a stale file is simply taken over, whatever pid it names
    (a pid may be reused). The pid inside is for people and for the refusal's message.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / "stack.pid"
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                pid = f" (pid {holder})" if holder.isdigit() else ""
                msg = f"the local stack is already running{pid}; stop it with Ctrl-C first"
                raise AlreadyRunningError(msg) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder before us unlinks the file when it stops, still holding the lock:
            # if that happened between our open and our lock, we hold a file nobody else
            # will open. Only the file at the path counts; try again with it.
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # before unlocking: see acquire
        os.close(self._fd)  # releases the lock
        self._fd = None


def _ready(url: str) -> bool:
    with (
        contextlib.suppress(urllib.error.URLError, OSError),
        urllib.request.urlopen(url, timeout=1) as response,  # noqa: S310 - our own URL
    ):
        return bool(response.status == 200)
    return False


class Supervised:
    """One child process: started, watched, restarted with backoff after a crash."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], url: str) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.url = url
        self.process: subprocess.Popen[bytes] | None = None
        self.backoff_s = BACKOFF_START_S
        self.restart_at: float | None = None
        self.started_at = 0.0

    def start(self) -> None:
        # Own process group: a terminal's Ctrl-C reaches us, and we stop children in order.
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our modules
            self.command, env=self.env, start_new_session=True
        )
        self.started_at = time.monotonic()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = self.process.returncode if self.process else None
                msg = f"the {self.name} process exited with code {code} before it was ready"
                raise RuntimeError(msg)
            if _ready(f"{self.url}/readyz"):
                return
            time.sleep(0.05)
        msg = f"the {self.name} process was not ready within {READY_TIMEOUT_S:.0f} s"
        raise RuntimeError(msg)

    def watch(self) -> None:
        """Restart after a crash, waiting longer after each crash that came quickly."""
        now = time.monotonic()
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restart_at = None
                log.warning("restarting %s", self.name)
                self.start()
            return
        if self.process is None or self.process.poll() is None:
            return
        if now - self.started_at > BACKOFF_MAX_S:
            self.backoff_s = BACKOFF_START_S  # it had run well for a while: start afresh
        log.error(
            "%s exited with code %s; restarting in %.1f s",
            self.name,
            self.process.returncode,
            self.backoff_s,
        )
        self.restart_at = now + self.backoff_s
        self.backoff_s = min(self.backoff_s * 2, BACKOFF_MAX_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait(self) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _StopRequestedError(Exception):
    """SIGINT or SIGTERM arrived."""


def _raise_stop(signum: int, _: FrameType | None) -> None:
    raise _StopRequestedError


def run_stack(folder: Path, say: Callable[[str], None]) -> int:
    """Bring the whole stack up, keep it up until a signal, then bring it all down."""
    folder.mkdir(exist_ok=True)
    lock = StackLock(folder)
    lock.acquire()
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    servers: list[EmbeddedPostgres] = []  # the embedded cluster, then its replicas
    children: list[Supervised] = []
    try:
        env = read_environment()
        roles = get_roles()
        replica_count = embedded_replica_count(env)
        if names_servers(env, roles):
            say("using the database servers named by the environment")
            if replica_count:
                say(f"{REPLICAS_VARIABLE} ignored: no embedded PostgreSQL to replicate")
        else:
            env.update(_start_embedded(folder, roles, replica_count, say, servers))
        env = {**load_credentials(folder).environment(), **env}  # what is set wins
        env.setdefault("MULTI_DB_BACKUP_DIR", str((folder / "backups").resolve()))
        settings = load_settings(env, roles)
        for name, database in settings.databases.items():
            say(f"migrating {name} to head")
            migrations.upgrade(roles[name], "head", database)
        children = _children(env, roles, list(settings.databases))
        for child in children:
            say(f"starting {child.name}")
            child.start()
        for child in children:
            child.wait_ready()
            say(f"  {child.name:<10} {child.url}   (OpenAPI: {child.url}/schema)")
        _say_ready(say, env, children)
        while True:
            for child in children:
                child.watch()
            time.sleep(0.2)
    except _StopRequestedError:
        say("stopping ...")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(children):
            child.stop()
        for child in children:
            child.wait()
        # The replicas before their primary: it need not wait for them to take its last WAL.
        _stop_all(servers)
        lock.release()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start_embedded(
    folder: Path,
    roles: Mapping[str, RoleSpec],
    replica_count: int,
    say: Callable[[str], None],
    servers: list[EmbeddedPostgres],
) -> dict[str, str]:
    """Start the embedded cluster, one database per role, and ``replica_count`` replicas;
    the environment that points every role at them. Each server joins ``servers`` as it
    starts, for the caller to stop whatever happens."""
    say(f"starting the embedded PostgreSQL in {folder / 'pg'}")
    server = EmbeddedPostgres(folder / "pg")
    servers.append(server)
    server.start()
    asyncio.run(server.create_databases(spec.database for spec in roles.values()))
    env = server.environment(roles)
    replicas = start_replicas(server, folder, replica_count, say)
    servers.extend(replicas)
    env.update(replicas_environment(roles, [replica.address for replica in replicas]))
    return env


def _say_ready(
    say: Callable[[str], None], env: Mapping[str, str], children: list[Supervised]
) -> None:
    say(f"ready. API key: {env['API_KEYS'].split(',')[0]}")
    say(f"       JWT secret: {env['JWT_SECRET']}")
    say("       a token: uv run multidb token --scopes db:read,db:execute")
    for child in children:
        if child.name == GATEWAY:
            say(f"       dashboard: {child.url}/dashboard (paste the API key)")
    say("       metrics: /metrics on every process above (open to this machine)")
    say("Ctrl-C stops everything.")


def _children(
    env: dict[str, str], roles: Mapping[str, RoleSpec], configured: list[str]
) -> list[Supervised]:
    # The children write to this process's stderr: one format for the whole output, the
    # one this process chose (human on a terminal), whatever each child would guess.
    log_format = resolve_format(load_log_settings(env).format, sys.stderr)
    child_env = {
        **os.environ,
        **env,
        "MULTI_DB_ENV_FILE": os.devnull,
        FORMAT_VARIABLE: log_format,
    }
    children = []
    for name in configured:
        port = int(env.get(f"MULTI_DB_{name.upper()}_SERVICE_PORT") or roles[name].port)
        url = f"http://127.0.0.1:{port}"
        child_env.setdefault(f"MULTI_DB_{name.upper()}_SERVICE_URL", url)
        command = [sys.executable, "-m", "multidb.service", name, "--port", str(port)]
        children.append(Supervised(name, command, child_env, url))
    if importlib.util.find_spec("multidb_gateway") is not None:
        port = int(env.get("MULTI_DB_GATEWAY_PORT") or GATEWAY_PORT)
        command = [sys.executable, "-m", "multidb_gateway", "--port", str(port)]
        children.append(Supervised(GATEWAY, command, child_env, f"http://127.0.0.1:{port}"))
    return children
