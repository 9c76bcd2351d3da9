"""``multidb split``: move a single database's tables into the role databases.

    multidb split --source postgresql://user:pass@host:port/db [--dry-run] [--resume]
                  [--drop-source-tables] [--quiet] [--batch-rows N] [--jobs N]

Every configured role whose database is not the source is migrated to head and gets its
models' tables copied from the source (COPY, batches, one snapshot), then verified (row
count and checksum per table); the role whose database is the source keeps it as it is.
Exit codes: 0 done and every checksum matched (or a dry run), 1 a checksum differed or
anything failed once the targets began to change (``--resume`` continues), 2 bad input
found before anything changed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping

import asyncpg
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from multidb.errors import CONNECTION_ERRORS, describe, trace
from multidb.plugins import get_roles
from multidb.settings import load_settings
from multidb.split.copy import BATCH_ROWS
from multidb.split.errors import SplitError, SplitFailedError
from multidb.split.run import JOBS, SplitOptions, SplitReport, split
from multidb.split.run import Progress as ProgressCallback
from multidb.split.source import parse_source

_err = Console(stderr=True, highlight=False)
Environment = Callable[[contextlib.ExitStack], Mapping[str, str]]


def _no_environment(_: contextlib.ExitStack) -> Mapping[str, str]:
    return {}


_environment: Environment = _no_environment


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[ProgressCallback]:
    """Bars on stderr, one per table being worked on; drawn only on a terminal."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
        disable=quiet or not _err.is_terminal,
    )
    tasks: dict[tuple[str, str], TaskID] = {}

    def update(phase: str, table: str, done: int, total: int | None) -> None:
        key = (phase, table)
        if key not in tasks:
            tasks[key] = bar.add_task(f"{phase} {table}", total=total)
        # An estimate (pg_class.reltuples) may fall short of the rows really there.
        shown = max(total, done) if total is not None else None
        bar.update(tasks[key], completed=done, total=shown)

    with bar:
        yield update


def _size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def print_report(report: SplitReport) -> None:
    print(f"source {report.source}{'  (dry run: nothing changed)' if report.dry_run else ''}")
    for role, why in report.left_alone.items():
        print(f"{role}: {why}")
    if report.migrated:
        print(f"migrated to head: {', '.join(report.migrated)}")
    if report.dry_run:
        rows = [["table", "rows", "size"]]
        rows += [[t.name, f"{t.rows:,}", _size(t.bytes)] for t in report.tables]
        rows.append(["total", f"{report.rows:,}", _size(report.bytes)])
        _print_table(rows)
        return
    rows = [["table", "rows", "bytes", "copy s", "verify s", "checksum"]]
    for t in report.tables:
        state = "ok" if t.verified else f"DIFFERS (source {t.source}, target {t.target})"
        if t.resumed:
            state += " (resumed)"
        rows.append(
            [t.name, f"{t.rows:,}", _size(t.bytes), f"{t.copy_s:.2f}", f"{t.verify_s:.2f}", state]
        )
    rows.append(
        [
            "total",
            f"{report.rows:,}",
            _size(report.bytes),
            f"{report.copy_s:.2f}",
            f"{report.verify_s:.2f}",
            "ok" if report.verified else "DIFFERS",
        ]
    )
    _print_table(rows)
    busy = report.copy_s + report.verify_s
    share = report.verify_s / busy if busy else 0.0
    rate = report.rows / report.copy_s if report.copy_s else 0.0
    speed = report.bytes / report.copy_s / 1024 / 1024 if report.copy_s else 0.0
    print(
        f"total {report.total_s:.1f} s: copy {report.copy_s:.1f} s ({rate:,.0f} rows/s, "
        f"{speed:.1f} MB/s), verification {report.verify_s:.1f} s "
        f"({share:.0%} of copy + verification)"
    )
    if report.dropped:
        print(f"dropped from the source: {', '.join(report.dropped)}")
    elif not report.verified:
        print("checksums differ: the source was left as it is")


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i in (0, len(row) - 1) else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        print("  ".join(cells).rstrip())
        if number == 0:
            print("  ".join("-" * width for width in widths))


def cmd_split(args: argparse.Namespace) -> int:
    try:
        source = parse_source(args.source)
    except SplitError as exc:
        print(f"multidb split: {exc}", file=sys.stderr)
        return 2
    options = SplitOptions(
        source=source,
        dry_run=args.dry_run,
        resume=args.resume,
        drop_source_tables=args.drop_source_tables,
        batch_rows=args.batch_rows,
        jobs=args.jobs,
    )
    roles = get_roles()
    with contextlib.ExitStack() as resources:
        settings = load_settings(_environment(resources), roles)
        try:
            with _progress(args.quiet) as progress:
                report = asyncio.run(split(options, roles, settings.databases, progress))
        except SplitError as exc:  # raised only before anything changed
            print(f"multidb split: {exc}", file=sys.stderr)
            return 2
        except SplitFailedError as exc:
            print(f"multidb split: {exc}", file=sys.stderr)
            return 1
        except (TimeoutError, *CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            print(
                f"multidb split: failed: {describe(exc)}; the source was not changed, "
                "and --resume continues from what was copied",
                file=sys.stderr,
            )
            return 1
        except Exception as exc:  # one line, never a traceback
            print(
                f"multidb split: failed: {describe(exc)} ({trace(exc)}); the source was not "
                "changed, and --resume continues from what was copied",
                file=sys.stderr,
            )
            return 1
    print_report(report)
    return 0 if report.dry_run or report.verified else 1


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected an integer >= 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environment: Environment
) -> None:
    """Add ``multidb split``; ``environment`` finds the role databases as every command does."""
    global _environment  # noqa: PLW0603 - set once, before any command runs
    _environment = environment
    parser = commands.add_parser(
        "split",
        help="move a single database's tables into the role databases",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--source",
        required=True,
        metavar="URL",
        help="the single database: postgresql://user:password@host:port/database",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="check and say what would be copied; change nothing"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="accept non-empty targets: continue each table after its last copied key",
    )
    parser.add_argument(
        "--drop-source-tables",
        action="store_true",
        help="drop the copied tables from the source once every checksum matched",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--batch-rows",
        type=_positive,
        default=BATCH_ROWS,
        help=f"rows per COPY batch (default {BATCH_ROWS:,})",
    )
    parser.add_argument(
        "--jobs", type=_positive, default=JOBS, help=f"tables copied at once (default {JOBS})"
    )
    parser.set_defaults(run=cmd_split)
