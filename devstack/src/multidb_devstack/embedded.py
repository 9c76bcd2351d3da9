"""An embedded PostgreSQL (the ``pgserver`` wheel's binaries) that looks like a real server.

The cluster listens on 127.0.0.1 with a port and a password (scram-sha-256), so
``DB_HOST``/``DB_PORT``, backup info and the low-privilege execute logins behave as in
production. PostgreSQL refuses to run as root: when we are root the cluster runs as the
``pgserver`` system user, as pgserver itself does.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import socket
import stat
import subprocess
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

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

from multidb.files import write_private
from multidb.roles import RoleSpec
from multidb.settings import DatabaseSettings, variable_name

SYSTEM_USER = "pgserver"
SUPERUSER = "postgres"


class EmbeddedState(msgspec.Struct, frozen=True, kw_only=True):
    """What is remembered in the data folder between starts: port and password."""

    port: int
    password: str


def _bin(name: str) -> str:
    return str(POSTGRES_BIN_PATH / name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``folder``: ``start()``, ``stop()``, ``create_databases()``."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder.resolve()
        self.pgdata = self.folder / "pgdata"
        self.state_file = self.folder / "state.json"
        self._port = port
        self._as_user = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def state(self) -> EmbeddedState:
        return msgspec.json.decode(self.state_file.read_bytes(), type=EmbeddedState)

    def _run(self, *args: str) -> None:
        result = subprocess.run(  # noqa: S603 - fixed binaries, arguments we build
            list(args), user=self._as_user, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            msg = f"{Path(args[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}"
            raise RuntimeError(msg)

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

    def start(self) -> EmbeddedState:
        """Start the cluster on 127.0.0.1 (no-op when it runs already); return port and password."""
        self.initialise()
        state = self.state
        if not self.is_running():
            options = f"-h 127.0.0.1 -p {state.port} -k {self.pgdata} -c max_connections=300"
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
        return state

    def stop(self) -> None:
        """Stop the cluster (fast shutdown); no-op when it is not running."""
        if self.is_running():
            self._run(_bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop")

    def is_running(self) -> bool:
        result = subprocess.run(  # noqa: S603
            [_bin("pg_ctl"), "-D", str(self.pgdata), "status"],
            user=self._as_user,
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def database_settings(self, spec: RoleSpec, database: str | None = None) -> DatabaseSettings:
        state = self.state
        return DatabaseSettings(
            host="127.0.0.1",
            port=state.port,
            username=SUPERUSER,
            password=state.password,
            database=database or spec.database,
            pool_size=spec.pool_size,
            max_overflow=spec.max_overflow,
        )

    async def create_databases(self, names: Iterable[str]) -> None:
        """Create each database that does not exist yet."""
        admin = DatabaseSettings(
            host="127.0.0.1",
            port=self.state.port,
            username=SUPERUSER,
            password=self.state.password,
            database="postgres",
        )
        conn = await admin.connect()
        try:
            existing = {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
            for name in names:
                if name not in existing:
                    await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    def environment(self, roles: Mapping[str, RoleSpec]) -> dict[str, str]:
        """The spec's environment variables that point every role at this cluster."""
        env: dict[str, str] = {}
        for spec in roles.values():
            database = self.database_settings(spec)
            for field in ("host", "port", "username", "password", "database"):
                env[variable_name(spec, field)] = str(getattr(database, field))
        return env


def start_embedded(
    folder: Path, roles: Mapping[str, RoleSpec]
) -> tuple[EmbeddedPostgres, dict[str, str]]:
    """Start (or reuse) the cluster in ``folder``, create one database per role, return its env."""
    server = EmbeddedPostgres(folder)
    server.start()
    asyncio.run(server.create_databases(spec.database for spec in roles.values()))
    return server, server.environment(roles)
