"""An embedded PostgreSQL (the ``pgserver`` wheel's binaries) that looks like a real server.

The cluster listens on 127.0.0.1 with a port and a password (scram-sha-256), so
``DB_HOST``/``DB_PORT``, backup info and the low-privilege execute logins behave as in
production. PostgreSQL refuses to run as root: when we are root the cluster runs as the
``pgserver`` system user, as pgserver itself does.

It serves TLS: on first start (a cluster made before this, on its next start) a private
CA (``ca.crt``, ``ca.key`` beside ``state.json``) and a server certificate for localhost,
127.0.0.1 and ::1 (``server.crt``, ``server.key`` in the cluster's folder) are made, keys
0600 from creation, and ``ssl = on`` is added to its configuration. Its environment makes
every role connect with ``sslmode=verify-full`` against that CA.

A running cluster makes streaming replicas of itself (:meth:`EmbeddedPostgres.create_replica`):
each a cluster of the same kind in a folder of its own, with its own port (and TLS front),
the same password and the same CA, started and stopped like the primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Literal

import msgspec

with warnings.catch_warnings():
    # pgserver asks platformdirs for XDG_RUNTIME_DIR at import; we never use that folder.
    warnings.simplefilter("ignore")
    from pgserver._commands import POSTGRES_BIN_PATH
    from pgserver.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

from multidb.backups.policy import role_variable
from multidb.files import write_private
from multidb.roles import RoleSpec
from multidb.settings import DatabaseSettings, variable_name
from multidb.tls import SslMode
from multidb_devstack import certificates

SYSTEM_USER = "pgserver"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
SSLMODE: SslMode = "verify-full"
# A server certificate this close to its end is replaced at the next start.
RENEW_MARGIN = timedelta(days=30)
NATIVE_TLS = """
# multidb: TLS with the certificate made on first start (server.crt, server.key here)
ssl = on
"""
BEHIND_FRONT = """
# multidb: built without TLS, so no TCP of its own; clients reach it through its TLS front
listen_addresses = ''
"""
FRONT_MODULE = "multidb_devstack.tls_front"
FRONT_STOP_TIMEOUT_S = 15.0
# pg_basebackup -R marks a replica with this file; promotion removes it.
STANDBY_SIGNAL = "standby.signal"
# A WAL segment's file name: timeline, then log and segment numbers (8 hex digits each).
WAL_SEGMENT = re.compile(r"[0-9A-F]{24}")
StopMode = Literal["smart", "fast", "immediate"]


class EmbeddedState(msgspec.Struct, frozen=True, kw_only=True):
    """What is remembered in the data folder between starts: port and password."""

    port: int
    password: str


def _bin(name: str) -> str:
    return str(POSTGRES_BIN_PATH / name)


def _segment(lsn: str, size: int) -> int:
    """The number of the WAL segment (of ``size`` bytes) that holds ``lsn`` (``'16/B374D848'``)."""
    high, _, low = lsn.partition("/")
    return ((int(high, 16) << 32) | int(low, 16)) // size


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``folder``: ``start()``, ``stop()``, ``create_databases()``."""

    def __init__(
        self, folder: Path, port: int | None = None, *, binaries: Path | None = None
    ) -> None:
        self.folder = folder.resolve()
        self.pgdata = self.folder / "pgdata"
        self.state_file = self.folder / "state.json"
        self.ca_file = self.folder / "ca.crt"
        self.ca_key_file = self.folder / "ca.key"
        self.server_certificate_file = self.pgdata / "server.crt"
        self.server_key_file = self.pgdata / "server.key"
        self.front_pid_file = self.folder / "tls-front.pid"
        self.binaries = binaries or POSTGRES_BIN_PATH
        self._front: subprocess.Popen[bytes] | None = None
        self._port = port
        self._as_user = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def state(self) -> EmbeddedState:
        return msgspec.json.decode(self.state_file.read_bytes(), type=EmbeddedState)

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``: where clients reach it (its TLS front, when it has one)."""
        return f"{HOST}:{self.state.port}"

    def _run(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        """Run one of this cluster's programs as its system user; its standard output.
        ``env``: variables added to the program's environment (a password goes there,
        ``PGPASSWORD``, never in argv)."""
        # The program of that name among this cluster's binaries (pgserver's unless given).
        program = str(self.binaries / Path(args[0]).name)
        full_env = None if env is None else {**os.environ, **env}
        result = subprocess.run(  # noqa: S603 - fixed binaries, arguments we build
            [program, *args[1:]],
            user=self._as_user,
            env=full_env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            msg = f"{Path(args[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}"
            raise RuntimeError(msg)
        return result.stdout

    def _prepare_permissions(self) -> None:
        ensure_user_exists(SYSTEM_USER)
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, readable)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def initialise(self) -> None:
        """Create the cluster once; later calls reuse it (and its port and password)."""
        if (self.pgdata / "PG_VERSION").exists() and self.state_file.exists():
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            self._prepare_permissions()
        state = EmbeddedState(port=self._port or free_port(), password=secrets.token_urlsafe(18))
        pwfile = self.folder / "initdb.pw"
        # Private from its first byte; initdb reads it as the cluster's user, who owns it.
        write_private(pwfile, f"{state.password}\n".encode())
        if self._as_user:
            entry = pwd.getpwnam(self._as_user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            self._run(
                _bin("initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-instructions",
            )
        finally:
            pwfile.unlink()
        write_private(self.state_file, msgspec.json.encode(state))

    @functools.cached_property
    def native_tls(self) -> bool:
        """Whether these binaries serve TLS themselves (built with OpenSSL); the pgserver
        wheel's do not, and get the TLS front (:mod:`multidb_devstack.tls_front`)."""
        result = subprocess.run(  # noqa: S603 - a fixed binary
            [str(self.binaries / "pg_config"), "--configure"],
            capture_output=True,
            text=True,
            check=False,
        )
        return "openssl" in result.stdout

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two commands starting or stopping the cluster at once take turns: neither makes
        # half a CA, neither starts a second front.
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def ensure_tls(self) -> bool:
        """Make what TLS needs when it is missing: the CA, the server's certificate (again
        when it nears its end or another CA issued it), the configuration (``ssl = on``, or
        no TCP of its own behind the front). True if anything changed, which a running server
        only sees after a restart. :meth:`start` calls it."""
        ca, changed = self._certificate_authority()
        certificate = (
            self.server_certificate_file.read_bytes()
            if self.server_certificate_file.exists() and self.server_key_file.exists()
            else b""
        )
        if changed or not certificates.still_good(certificate, ca, margin=RENEW_MARGIN):
            self._write_server_certificate(
                certificates.issue(ca, HOST, hosts=certificates.LOCAL_HOSTS)
            )
            changed = True
        configuration = self.pgdata / "postgresql.conf"
        wanted = NATIVE_TLS if self.native_tls else BEHIND_FRONT
        if wanted not in configuration.read_text():
            with configuration.open("a") as handle:
                handle.write(wanted)
            changed = True
        return changed

    def use_certificates(self, ca: certificates.Issued, server: certificates.Issued) -> None:
        """Serve ``server``'s certificate, issued by ``ca``, from the next start on (a CA of
        one's own instead of the generated one; the tests' certificates)."""
        write_private(self.ca_key_file, ca.key_pem)
        write_private(self.ca_file, ca.certificate_pem)
        self.ca_file.chmod(0o644)
        self._write_server_certificate(server)

    def _write_server_certificate(self, server: certificates.Issued) -> None:
        for path, data in (
            (self.server_key_file, server.key_pem),
            (self.server_certificate_file, server.certificate_pem),
        ):
            write_private(path, data)
            self._give_to_server(path)

    def _certificate_authority(self) -> tuple[certificates.Issued, bool]:
        """The cluster's CA, made now if missing or unusable (second item: made now)."""
        if self.ca_file.exists() and self.ca_key_file.exists():
            try:
                ca = certificates.Issued.load(
                    self.ca_file.read_bytes(), self.ca_key_file.read_bytes()
                )
            except (ValueError, TypeError):
                pass
            else:
                if ca.certificate.public_key() == ca.key.public_key():
                    return ca, False
        ca = certificates.make_ca(f"multidb embedded PostgreSQL CA ({self.folder.name})")
        write_private(self.ca_key_file, ca.key_pem)
        write_private(self.ca_file, ca.certificate_pem)
        self.ca_file.chmod(0o644)  # a certificate is public: any local client may read it
        return ca, True

    def _give_to_server(self, path: Path) -> None:
        # PostgreSQL reads its key as its own system user, and only from a 0600 file it owns.
        if self._as_user:
            entry = pwd.getpwnam(self._as_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> EmbeddedState:
        """Start the cluster on 127.0.0.1 with TLS (restarted if its TLS files were just
        made; a no-op when it runs already); return port and password."""
        with self._locked():
            self.initialise()
            changed = self.ensure_tls()
            state = self.state
            if changed:
                self._stop()
            if not self._server_running():
                # Behind the front the server has no TCP port: its Unix socket only.
                listen = HOST if self.native_tls else "''"
                options = f"-h {listen} -p {state.port} -k {self.pgdata} -c max_connections=300"
                self._run(
                    _bin("pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-w",
                    "-t",
                    "30",
                    "-l",
                    str(self.pgdata / "server.log"),
                    "-o",
                    options,
                    "start",
                )
            if not self.native_tls and self._front_pid() is None:
                self._start_front(state)
        return state

    def stop(self, *, mode: StopMode = "fast") -> None:
        """Stop the cluster and its front; no-op when neither runs. ``mode``: pg_ctl's
        shutdown mode (``immediate``: no checkpoint, crash recovery at the next start, as
        after a crash)."""
        with self._locked():
            self._stop(mode)

    def _stop(self, mode: StopMode = "fast") -> None:
        self._stop_front()
        if self._server_running():
            self._run(_bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-m", mode, "stop")

    def reload(self) -> None:
        """Ask the running cluster to read its configuration files again (``pg_ctl reload``)."""
        self._run(_bin("pg_ctl"), "-D", str(self.pgdata), "reload")

    def is_running(self) -> bool:
        """Whether clients can reach it: the server runs, and its front when it has one."""
        return self._server_running() and (self.native_tls or self._front_pid() is not None)

    def _server_running(self) -> bool:
        result = subprocess.run(  # noqa: S603
            [str(self.binaries / "pg_ctl"), "-D", str(self.pgdata), "status"],
            user=self._as_user,
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    # ---- streaming replicas --------------------------------------------------------------

    @property
    def standby_name(self) -> str:
        """The name a replica goes by on its primary (``application_name`` in the primary's
        ``pg_stat_replication``; ``cluster_name`` in its own configuration): its folder's."""
        return re.sub(r"[^A-Za-z0-9_.-]", "_", self.folder.name)

    def is_standby(self) -> bool:
        """Whether the cluster is a replica (made so, and not promoted since)."""
        return (self.pgdata / STANDBY_SIGNAL).exists()

    def create_replica(self, folder: Path, port: int | None = None) -> EmbeddedPostgres:
        """A streaming replica of this running cluster in ``folder``, not started yet (its
        :meth:`start` starts it, with its own TLS front when it needs one).

        The replica there already is reused (its port too, whatever ``port`` says) when it
        can still follow this cluster. Anything else in ``folder`` is replaced: a replica
        of another cluster (this one was made anew), one promoted since, one half made,
        or one too far behind to catch up (this cluster no longer holds the WAL it needs,
        as after a long while without it). A replica has its own port (``port``, or a free
        one), this cluster's password (its roles are the primary's, copied) and a copy of
        its CA, which issued the server certificate pg_basebackup copied with the data."""
        replica = EmbeddedPostgres(folder, port, binaries=self.binaries)
        with replica._locked():
            if not replica._follows(self):
                replica._copy_of(self)
        return replica

    def promote(self) -> None:
        """Make this replica a primary (``pg_ctl promote``); returns once it takes writes."""
        self._run(_bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60", "promote")

    async def standbys(self) -> dict[str, str]:
        """The replicas streaming from this cluster now: each one's :attr:`standby_name`
        and state (``startup``, ``catchup``, ``streaming``) as ``pg_stat_replication`` has it."""
        conn = await self.admin_settings().connect(timeout=10)
        try:
            rows = await conn.fetch("SELECT application_name, state FROM pg_stat_replication")
        finally:
            await conn.close()
        return {row["application_name"]: row["state"] for row in rows}

    def _control(self) -> dict[str, str]:
        """``pg_controldata``'s fields (system identifier, last checkpoint, ...)."""
        # LC_ALL=C: the field names in English whatever the machine's locale.
        said = self._run(_bin("pg_controldata"), "-D", str(self.pgdata), env={"LC_ALL": "C"})
        fields = (line.partition(":") for line in said.splitlines())
        return {name.strip(): value.strip() for name, _, value in fields}

    def _follows(self, primary: EmbeddedPostgres) -> bool:
        """Whether this folder holds a replica of ``primary`` that can catch up with it."""
        if not (self.is_standby() and self.state_file.exists()):
            return False
        if not (self.ca_file.exists() and self.ca_key_file.exists()):
            return False
        try:
            mine = self._control()
        except RuntimeError:  # no readable pg_control: not a cluster, whatever it holds
            return False
        theirs = primary._control()
        identifier = "Database system identifier"
        if not mine.get(identifier) or mine.get(identifier) != theirs.get(identifier):
            return False  # a copy of another cluster, one whose folder was made anew since
        if self._server_running():
            return True  # it streams, or catches up from where it is: wait_streaming tells
        return self._resumes_within(mine, primary)

    def _resumes_within(self, control: Mapping[str, str], primary: EmbeddedPostgres) -> bool:
        """Whether ``primary`` still holds the WAL this stopped replica (its ``control``
        data) asks for when it starts: it replays its own WAL, then streams the rest from
        where that ends. No slot keeps that WAL on the primary: a replica left stopped
        while the primary went on may be too far behind. Where its own WAL ends is not
        recorded; its last restart point and its minimum recovery point (moved up to the
        last record replayed whenever it wrote pages) come before that end, so a primary
        holding the later one's segment holds all the replica will ask for."""
        try:
            size = int(control["Bytes per WAL segment"])
            resumes = max(
                _segment(control["Latest checkpoint's REDO location"], size),
                _segment(control["Minimum recovery ending location"], size),
            )
        except (KeyError, ValueError):
            return False
        # A segment's file name: timeline, then its number as two words of 8 hex digits.
        per_word = 0x1_0000_0000 // size
        held = [
            int(name[8:16], 16) * per_word + int(name[16:], 16)
            for name in os.listdir(primary.pgdata / "pg_wal")
            if WAL_SEGMENT.fullmatch(name)
        ]
        return bool(held) and min(held) <= resumes

    def _copy_of(self, primary: EmbeddedPostgres) -> None:
        """Make this folder a new replica of ``primary`` (pg_basebackup -R), replacing what
        is there; the port stays the one it had, if any."""
        kept_port = self.state.port if self.state_file.exists() else None
        if self.pgdata.exists():
            self._stop("immediate")  # a stale replica running from there: its copy goes
            shutil.rmtree(self.pgdata)
        # Gone before the copy starts, and written once it is complete: a copy that fails
        # half way is not taken for a replica next time.
        self.state_file.unlink(missing_ok=True)
        self.pgdata.mkdir(parents=True, mode=0o700)
        self.pgdata.chmod(0o700)  # PostgreSQL refuses a data folder others may read
        if self._as_user:
            self._prepare_permissions()
        source = primary.state
        self._run(
            _bin("pg_basebackup"),
            "-D",
            str(self.pgdata),
            "-h",
            str(primary.pgdata),  # its Unix socket: the binaries have no TLS for the front
            "-p",
            str(source.port),
            "-U",
            SUPERUSER,
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            env={"PGPASSWORD": source.password},
        )
        # The primary's log came with its data: this one's log starts empty.
        (self.pgdata / "server.log").unlink(missing_ok=True)
        with (self.pgdata / "postgresql.conf").open("a") as handle:
            handle.write(
                "\n# multidb: the name this replica goes by on its primary (pg_stat_replication)\n"
                f"cluster_name = '{self.standby_name}'\n"
            )
        # The server certificate came with the data; its CA comes along, key included, so
        # that it still chains to what clients trust and can be renewed here.
        write_private(self.ca_key_file, primary.ca_key_file.read_bytes())
        write_private(self.ca_file, primary.ca_file.read_bytes())
        self.ca_file.chmod(0o644)
        state = EmbeddedState(port=self._port or kept_port or free_port(), password=source.password)
        write_private(self.state_file, msgspec.json.encode(state))

    # ---- the TLS front (binaries without TLS) --------------------------------------------

    def _front_pid(self) -> int | None:
        """The pid of this cluster's running front, if one runs."""
        try:
            pid = int(self.front_pid_file.read_text())
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, ValueError, IndexError):
            return None
        # The pid may have been reused since the file was written: check it is our front.
        if state == "Z" or FRONT_MODULE.encode() not in command:
            return None
        return pid if str(self.pgdata).encode() in command else None

    def _start_front(self, state: EmbeddedState) -> None:
        log_file = (self.folder / "tls-front.log").open("ab")
        process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
            [
                sys.executable,
                "-m",
                FRONT_MODULE,
                "--port",
                str(state.port),
                "--socket",
                str(self.pgdata / f".s.PGSQL.{state.port}"),
                "--certificate",
                str(self.server_certificate_file),
                "--key",
                str(self.server_key_file),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,  # a terminal's Ctrl-C is for the stack, which stops us
        )
        log_file.close()
        said = b""
        if process.stdout is not None:
            said = process.stdout.readline()  # "ready", or nothing when it exits first
            process.stdout.close()
        if said.strip() != b"ready":
            process.wait()
            tail = (self.folder / "tls-front.log").read_text(errors="replace").strip()
            last = tail.splitlines()[-1] if tail else f"exit code {process.returncode}"
            msg = f"the TLS front of the embedded PostgreSQL did not start: {last}"
            raise RuntimeError(msg)
        write_private(self.front_pid_file, str(process.pid).encode())
        self._front = process

    def _stop_front(self) -> None:
        pid = self._front_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if self._front is not None and self._front.pid == pid:
                try:
                    self._front.wait(timeout=FRONT_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self._front.kill()
                    self._front.wait()
            else:  # started by another process: not ours to reap, so watch it go
                deadline = time.monotonic() + FRONT_STOP_TIMEOUT_S
                while self._front_pid() == pid and time.monotonic() < deadline:
                    time.sleep(0.02)
                if self._front_pid() == pid:
                    os.kill(pid, signal.SIGKILL)
        self._front = None
        self.front_pid_file.unlink(missing_ok=True)

    def database_settings(self, spec: RoleSpec, database: str | None = None) -> DatabaseSettings:
        """``spec``'s settings on this cluster: TLS verified against its CA (verify-full)."""
        state = self.state
        return DatabaseSettings(
            host=HOST,
            port=state.port,
            username=SUPERUSER,
            password=state.password,
            database=database or spec.database,
            pool_size=spec.pool_size,
            max_overflow=spec.max_overflow,
            sslmode=SSLMODE,
            sslrootcert=str(self.ca_file),
            role=spec.name,
            env_prefix=spec.prefix,
        )

    def admin_settings(self, database: str = "postgres") -> DatabaseSettings:
        """The superuser's settings for ``database`` on this cluster (TLS, verify-full)."""
        state = self.state
        return DatabaseSettings(
            host=HOST,
            port=state.port,
            username=SUPERUSER,
            password=state.password,
            database=database,
            sslmode=SSLMODE,
            sslrootcert=str(self.ca_file),
            role="embedded PostgreSQL",
        )

    async def create_databases(self, names: Iterable[str]) -> None:
        """Create each database that does not exist yet."""
        conn = await self.admin_settings().connect()
        try:
            existing = {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
            for name in names:
                if name not in existing:
                    await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    def environment(self, roles: Mapping[str, RoleSpec]) -> dict[str, str]:
        """The spec's environment variables that point every role at this cluster, and
        the backup tools at its binaries and socket."""
        env: dict[str, str] = {}
        for spec in roles.values():
            database = self.database_settings(spec)
            for field in (
                "host",
                "port",
                "username",
                "password",
                "database",
                "sslmode",
                "sslrootcert",
            ):
                env[variable_name(spec, field)] = str(getattr(database, field))
            # pg_dump and pg_restore of this cluster's own version, on its Unix socket:
            # the pgserver binaries have no TLS to go through the front with.
            env[role_variable(spec, "BACKUP_HOST")] = str(self.pgdata)
        env["MULTI_DB_PG_BIN_DIR"] = str(self.binaries)
        return env


async def wait_streaming(
    primary: EmbeddedPostgres, replicas: Iterable[EmbeddedPostgres], timeout_s: float = 30.0
) -> None:
    """Return once each of ``replicas`` streams from ``primary``; RuntimeError, naming the
    first one that does not and its log, after ``timeout_s``."""
    waiting = list(replicas)
    deadline = time.monotonic() + timeout_s
    while True:
        states = await primary.standbys()
        waiting = [r for r in waiting if states.get(r.standby_name) != "streaming"]
        if not waiting:
            return
        if time.monotonic() > deadline:
            late = waiting[0]
            msg = (
                f"the replica in {late.folder} does not stream from {primary.folder} after "
                f"{timeout_s:.0f} s (its log: {late.pgdata / 'server.log'})"
            )
            raise RuntimeError(msg)
        await asyncio.sleep(0.05)


def start_embedded(
    folder: Path, roles: Mapping[str, RoleSpec]
) -> tuple[EmbeddedPostgres, dict[str, str]]:
    """Start (or reuse) the cluster in ``folder``, create one database per role, return its env."""
    server = EmbeddedPostgres(folder)
    server.start()
    asyncio.run(server.create_databases(spec.database for spec in roles.values()))
    return server, server.environment(roles)
