"""The development stack's hooks: ``multidb up``, and the embedded server for other commands."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Mapping
from pathlib import Path

from multidb.errors import DatabaseTLSError
from multidb.plugins import get_roles, hookimpl
from multidb_devstack.embedded import EmbeddedPostgres
from multidb_devstack.stack import load_credentials, run_stack

# The stack's folder, relative to where `make run` runs: the project's root.
DATA = Path(".data")


def _colour(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if sys.stdout.isatty() else text


def cmd_up(_: argparse.Namespace) -> int:
    def say(message: str) -> None:
        print(
            _colour("==> ", "1;34") + message if not message.startswith(" ") else message,
            flush=True,
        )

    try:
        return run_stack(DATA, say)
    except (RuntimeError, DatabaseTLSError) as exc:  # AlreadyRunningError included
        # Everything started was stopped already; one line says why.
        print(f"multidb up: {exc}", file=sys.stderr)
        return 1


@hookimpl
def multidb_cli_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser(
        "up", help="start the local stack: embedded PostgreSQL, migrations, services, gateway"
    ).set_defaults(run=cmd_up)


@hookimpl
def multidb_cli_environment(
    resources: contextlib.ExitStack, start_database: bool
) -> Mapping[str, str] | None:
    embedded = EmbeddedPostgres(DATA / "pg")
    if not embedded.state_file.exists():
        return None
    if start_database and not embedded.is_running():
        embedded.start()
        resources.callback(embedded.stop)
    env = dict(embedded.environment(get_roles()))
    env["MULTI_DB_BACKUP_DIR"] = str((DATA / "backups").resolve())
    if (DATA / "credentials.json").exists():
        env = {**load_credentials(DATA).environment(), **env}
    return env
