"""``multidb archive``: the archive service's mover, from a terminal.

    multidb archive run [--dry-run] [MODEL ...]        archive what the policy says
    multidb archive status                             schedule, policy, rows archived, last run
    multidb archive unarchive MODEL ID [ID ...]        bring these rows back
    multidb archive unarchive --all MODEL [MODEL ...]  bring every archived row of these back

The command runs the mover itself (the archive service need not run) and takes the same
lock as the service's runs, so it never runs beside one. ``--json`` prints the raw report.
Exit codes: 0 done, 1 the run failed or stopped (or a database is unreachable), 2 bad
input or configuration, 3 another run holds the mover.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import asyncpg
import msgspec
from rich.console import Console
from rich.progress import Progress, TaskID, TextColumn, TimeElapsedColumn

from multidb.cli import command_environment
from multidb.errors import CONNECTION_ERRORS, MultiDBError, describe
from multidb.plugins import get_roles
from multidb.settings import Settings, load_settings, variable_name
from multidb_archive.mover import (
    ArchiveStatus,
    Mover,
    MoverBusyError,
    MoverError,
    RunReport,
    RunRequest,
)
from multidb_archive.runs import NO_SOURCE, archive_settings, requester

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUSY = 3
UNREACHABLE: tuple[type[Exception], ...] = (TimeoutError, OSError, *CONNECTION_ERRORS)

_err = Console(stderr=True, highlight=False)


class UsageError(Exception):
    """Bad input or configuration: one line, exit 2."""


def _settings() -> Settings:
    with contextlib.ExitStack() as resources:
        env = command_environment(resources, start_database=True)
        return load_settings(env, get_roles())


def _mover(settings: Settings, *, needs_source: bool) -> Mover:
    archive = settings.databases.get("archive")
    if archive is None:
        host = variable_name(get_roles()["archive"], "host")
        raise UsageError(f"role 'archive' has no database configured (set {host})")
    source = settings.databases.get("default")
    if source is None and needs_source:
        raise UsageError(f"{NO_SOURCE} (set DB_HOST)")
    return Mover(source, archive, archive_settings(settings))


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Callable[[str, int], None]]:
    """Rows done per model, on stderr, drawn only on a terminal."""
    bar = Progress(
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,.0f} rows"),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
        disable=not _err.is_terminal,
    )
    tasks: dict[str, TaskID] = {}

    def update(model: str, rows_done: int) -> None:
        if model not in tasks:
            tasks[model] = bar.add_task(f"{label} {model}", total=None)
        bar.update(tasks[model], completed=rows_done)

    with bar:
        yield update


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def render_report(report: RunReport) -> str:
    """A run as a person reads it: its state, then one line per model."""
    verb = "would move" if report.dry_run else "moved"
    head = f"{report.kind} run {report.id}: {report.state}"
    if report.dry_run:
        head += " (dry run: nothing changed)"
    if report.finished_at is not None:
        head += f" in {(report.finished_at - report.started_at).total_seconds():.1f} s"
    lines = [head]
    if report.message:
        lines.append(f"  {report.message}")
    rows = [["model", f"rows {verb}", "bytes", "batches", "changed", "held back"]]
    for model, found in report.models.items():
        held = ", ".join(f"{count} {reason}" for reason, count in found.held_back.items())
        rows.append(
            [
                model,
                str(found.rows),
                _size(found.bytes),
                str(found.batches),
                str(found.changed),
                held or "-",
            ]
        )
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            lines.append("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
    else:
        lines.append("  no model to move")
    return "\n".join(line.rstrip() for line in lines)


def render_status(status: ArchiveStatus, source_configured: bool) -> str:
    policy = ", ".join(f"{model} {rule}" for model, rule in status.policy.items()) or "none"
    archived = ", ".join(f"{model} {rows}" for model, rows in status.archived.items()) or "-"
    lines = [
        f"schedule: {status.schedule}",
        f"policy: {policy}",
        f"archived rows: {archived}",
        f"running: {status.running or 'no run'}",
        f"open ledger batches: {status.pending_batches}"
        + (" (the next run recovers them)" if status.pending_batches else ""),
    ]
    if not source_configured:
        lines.append(f"source: {NO_SOURCE}")
    if status.last_run is None:
        lines.append("last run: none")
    else:
        lines.append("last run:")
        lines.extend("  " + line for line in render_report(status.last_run).splitlines())
    return "\n".join(lines)


def _json(value: msgspec.Struct) -> str:
    return msgspec.json.format(msgspec.json.encode(value)).decode()


def _exit_code(report: RunReport) -> int:
    return EXIT_DONE if report.state == "done" else EXIT_FAILED


async def _run(settings: Settings, request: RunRequest, as_json: bool) -> int:
    mover = _mover(settings, needs_source=True)
    try:
        label = "unarchive" if request.kind == "unarchive" else "archive"
        with _progress(label + (" (dry run)" if request.dry_run else "")) as progress:
            report = await mover.run(
                request,
                trigger="cli",
                requested_by=requester(f"cli:{getpass.getuser()}"),
                progress=progress,
            )
    finally:
        await mover.close()
    print(_json(report) if as_json else render_report(report))
    return _exit_code(report)


async def _status(settings: Settings, as_json: bool) -> int:
    mover = _mover(settings, needs_source=False)
    try:
        status = await mover.status()
    finally:
        await mover.close()
    if as_json:
        print(_json(status))
    else:
        print(render_status(status, mover.source is not None))
    return EXIT_DONE


def _guarded(work: Callable[[Settings], Coroutine[Any, Any, int]]) -> int:
    """Run ``work`` with the settings; every refusal is one line and an exit code."""
    try:
        return asyncio.run(work(_settings()))
    except UsageError as exc:
        print(f"multidb archive: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MoverError as exc:
        print(f"multidb archive: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MoverBusyError as exc:
        print(f"multidb archive: another run holds the mover: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except (*UNREACHABLE, asyncpg.PostgresError) as exc:
        print(f"multidb archive: database unavailable: {describe(exc, 10_000)}", file=sys.stderr)
        return EXIT_FAILED
    except MultiDBError as exc:
        # Above all DatabaseUnavailableError ("database 'archive' is unavailable: ..."): the
        # mover's line, meant for a person, names the database already.
        print(f"multidb archive: {exc.detail}", file=sys.stderr)
        return EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    request = RunRequest(kind="archive", dry_run=args.dry_run, models=args.models or None)
    return _guarded(lambda settings: _run(settings, request, args.json))


def cmd_status(args: argparse.Namespace) -> int:
    return _guarded(lambda settings: _status(settings, args.json))


def unarchive_request(args: argparse.Namespace) -> RunRequest:
    """``MODEL ID ...`` (these rows) or ``--all MODEL ...`` (every archived row of them)."""
    if args.all:
        return RunRequest(kind="unarchive", dry_run=args.dry_run, models=list(args.targets))
    model, *texts = args.targets
    if not texts:
        msg = f"give the ids of the {model} rows to bring back, or --all {model}"
        raise UsageError(msg)
    ids: list[int] = []
    for text in texts:
        try:
            ids.append(int(text))
        except ValueError:
            raise UsageError(f"{text!r} is not a row id (an integer)") from None
    return RunRequest(kind="unarchive", dry_run=args.dry_run, models=[model], ids={model: ids})


def cmd_unarchive(args: argparse.Namespace) -> int:
    try:
        request = unarchive_request(args)
    except UsageError as exc:
        print(f"multidb archive: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _guarded(lambda settings: _run(settings, request, args.json))


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``multidb archive run|status|unarchive`` (the archive role's plugin adds them)."""
    archive = commands.add_parser(
        "archive",
        help="move old rows of the default database to the archive database, and back",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = archive.add_subparsers(dest="archive_command", required=True)
    run = verbs.add_parser("run", help="archive what MULTI_DB_ARCHIVE_POLICY says")
    run.add_argument("models", nargs="*", metavar="MODEL", help="only these (default: all)")
    run.add_argument("--dry-run", action="store_true", help="report what would move, move nothing")
    run.set_defaults(run=cmd_run)
    status = verbs.add_parser("status", help="schedule, policy, rows archived, the last run")
    status.set_defaults(run=cmd_status)
    unarchive = verbs.add_parser(
        "unarchive", help="bring archived rows back: MODEL ID ..., or --all MODEL ..."
    )
    unarchive.add_argument(
        "targets",
        nargs="+",
        metavar="MODEL_OR_ID",
        help="MODEL ID [ID ...], or MODEL ... with --all",
    )
    unarchive.add_argument(
        "--all",
        "--policy-all",
        dest="all",
        action="store_true",
        help="every archived row of the models named",
    )
    unarchive.add_argument("--dry-run", action="store_true", help="report, move nothing")
    unarchive.set_defaults(run=cmd_unarchive)
    for parser in (run, status, unarchive):
        parser.add_argument("--json", action="store_true", help="print the raw report as JSON")
