"""The PostgreSQL tools a backup runs: found to match the server, run without secrets.

``pg_dump`` must be at least the server's major version, and the restore side reads what
``pg_dump`` wrote, so a pair from one installation is chosen: ``MULTI_DB_PG_BIN_DIR`` when
set, else the first of ``PATH`` and ``/usr/lib/postgresql/<major>/bin`` whose major
version is the server's (a newer one if none is). Anything else is one clear error naming
the versions and the setting.

The password reaches a tool through a passfile (mode 0600, in a private folder, removed
after the run), never argv; the tool's environment is built from nothing but ``PATH``,
the locale and the ``PG*`` connection variables, so no other secret of this process
(``DB_PASSWORD``, ``JWT_SECRET``...) is inherited either.

A tool dies with the process that started it (Linux: ``PR_SET_PDEATHSIG``): a service
killed mid-backup leaves no ``pg_dump`` holding a snapshot, its table locks and a
half-written file while the next leader starts another.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from multidb.files import write_private
from multidb.settings import DatabaseSettings

DEBIAN_BINARIES = Path("/usr/lib/postgresql")
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
# Variables a tool may inherit: what it needs to run, nothing that could be a secret.
INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class BackupToolError(Exception):
    """The tools are missing, too old, or failed: the message is the one line to show."""


class PgTools(msgspec.Struct, frozen=True, kw_only=True):
    pg_dump: str
    pg_restore: str
    version: str  # "16.4"
    major: int


def _inherited() -> dict[str, str]:
    return {name: os.environ[name] for name in INHERITED if name in os.environ}


@functools.cache
def _version(program: str) -> tuple[int, str] | None:
    try:
        out = subprocess.run(  # noqa: S603 - a program path we found, a fixed argument
            [program, "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            env=_inherited(),  # never this process's secrets
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    if match is None:
        return None
    return int(match[1]), f"{match[1]}.{match[2] or 0}"


def _candidates(bin_dir: str) -> list[Path]:
    if bin_dir:
        return [Path(bin_dir)]
    found = []
    on_path = shutil.which("pg_dump")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    if DEBIAN_BINARIES.is_dir():
        found.extend(sorted(DEBIAN_BINARIES.glob("*/bin"), reverse=True))
    return found


def find_tools(bin_dir: str, server_major: int) -> PgTools:
    """``pg_dump`` and ``pg_restore`` for a server of ``server_major``; raise
    :class:`BackupToolError` with the versions found and what to set."""
    usable: list[PgTools] = []
    seen: list[str] = []
    for folder in _candidates(bin_dir):
        dump, restore = folder / "pg_dump", folder / "pg_restore"
        version = _version(str(dump)) if dump.is_file() else None
        if version is None or not restore.is_file():
            continue
        seen.append(f"{version[1]} in {folder}")
        if version[0] >= server_major:
            usable.append(
                PgTools(
                    pg_dump=str(dump), pg_restore=str(restore), version=version[1], major=version[0]
                )
            )
    exact = [tools for tools in usable if tools.major == server_major]
    if exact or usable:
        return (exact or sorted(usable, key=lambda tools: tools.major))[0]
    where = f"MULTI_DB_PG_BIN_DIR={bin_dir}" if bin_dir else "PATH or /usr/lib/postgresql"
    found = "; found " + ", ".join(seen) if seen else "; found none"
    msg = (
        f"no pg_dump/pg_restore of PostgreSQL {server_major} or newer in {where}{found}: "
        f"set MULTI_DB_PG_BIN_DIR to a PostgreSQL {server_major} bin folder"
    )
    raise BackupToolError(msg)


def tied_to_us() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child killed when this process dies (None where the
    system cannot). It runs between fork and exec: a system call, nothing that locks."""
    if _LIBC is None:
        return None
    prctl, parent = _LIBC.prctl, os.getpid()

    def tie() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # we died before the tie was made
            os._exit(1)

    return tie


def _passfile_line(password: str) -> bytes:
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n".encode()


@contextlib.contextmanager
def tool_environment(
    database: DatabaseSettings, *, host: str = "", dbname: str | None = None
) -> Iterator[dict[str, str]]:
    """The environment of one tool run against ``database`` (``host`` instead of its own,
    ``dbname`` instead of its database); the passfile goes when the block ends."""
    env = _inherited()
    env.update(database.libpq_environment())
    if host:
        env["PGHOST"] = host
        if database.is_cluster:  # one given host instead of the cluster's list
            env["PGPORT"] = str(database.port)
            env.pop("PGTARGETSESSIONATTRS", None)
        if host.startswith("/"):
            # A Unix socket: TLS does not apply, and tools built without it refuse the modes.
            for name in [name for name in env if name.startswith("PGSSL")]:
                del env[name]
    if dbname is not None:
        env["PGDATABASE"] = dbname
    env["PGAPPNAME"] = "multidb-backup"
    with tempfile.TemporaryDirectory(prefix="multidb-pg-") as private:
        if database.password:
            passfile = Path(private) / "pgpass"
            write_private(passfile, _passfile_line(database.password))
            env["PGPASSFILE"] = str(passfile)
        yield env
