"""The archive mover in a process of its own, for tests that kill it or pull a database
from under it: ``python tests/mover_process.py [archive|unarchive] [MODEL ...]``.

The settings come from the environment (the ``env`` of ``tests.archiving.mover_databases``).
It runs ``Mover.run(RunRequest(...), trigger="cli")`` and writes the report as one JSON
line on stdout: exit code 0 when the run is ``done``, 1 when it ended otherwise (failed,
stopped). A run refused before it starts (bad request, busy, a database unreachable) is
one line on stderr and exit code 2. What the mover logs at INFO (a pause, a recovered
batch) goes to stderr, a line each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import msgspec

from multidb.errors import DatabaseUnavailableError
from multidb.plugins import get_roles
from multidb.settings import load_settings
from multidb_archive.mover import (
    Mover,
    MoverBusyError,
    MoverError,
    RunRequest,
    load_archive_settings,
)


async def main(argv: list[str]) -> int:
    kind = argv[0] if argv else "archive"
    if kind not in ("archive", "unarchive"):
        sys.stderr.write(f"unknown kind {kind!r} (archive or unarchive)\n")
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    mover_log = logging.getLogger("multidb.archive")
    mover_log.addHandler(handler)
    mover_log.setLevel(logging.INFO)
    env = dict(os.environ)
    settings = load_settings(env, get_roles())
    mover = Mover(
        settings.databases["default"], settings.databases["archive"], load_archive_settings(env)
    )
    request = RunRequest(kind=kind, models=argv[1:] or None)  # type: ignore[arg-type]
    try:
        report = await mover.run(request, trigger="cli")
    except (MoverError, MoverBusyError, DatabaseUnavailableError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    finally:
        await mover.close()
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    sys.stdout.flush()
    return 0 if report.state == "done" else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
