"""``multidb audit verify``: walk every chain of the audit trail and report tampering.

Each writer's chain (:mod:`multidb_logging.chain`) is read in ``chain_seq`` order through a
server-side cursor, inside one read-only, repeatable-read transaction (one snapshot, so
batches stored meanwhile cannot look like gaps; memory stays bounded whatever the table's
size). Every record is checked twice: its content (``row_hash`` recomputed from its
columns) and its link (``chain_seq`` one more than the record before, ``prev_hash`` that
record's ``row_hash``). What fails is read as:

- **edited**: a record whose columns no longer match its hash, or one rewritten with a new
  hash (the record after it still links to the old one);
- **deleted**: a gap in ``chain_seq``, or records missing from the end of the chain (the
  head kept in ``access_log_chains`` names a record that is gone);
- **inserted**: a record that fits no link (wrong hash and wrong place, or numbered beyond
  the chain's recorded head), or one stored without a link after the chains began.

The first record of each kind is reported per chain, with its id and event id, and how many
more there are. The kind is the verifier's best reading; the place is exact. Records
stored before the chain existed (migration 0002) are counted, not checked.

Exit status: 0 intact, 1 tampering found, 2 usage or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import asyncpg

from multidb.cli import command_environment
from multidb.errors import CONNECTION_ERRORS, describe
from multidb.plugins import get_roles
from multidb.settings import DatabaseSettings, load_settings, variable_name
from multidb_logging.chain import (
    GENESIS,
    PRE_CHAIN_DIGEST,
    PRE_CHAIN_WRITER,
    RECORD_FIELDS,
    link_hash,
)

EXIT_INTACT, EXIT_TAMPERED, EXIT_ERROR = 0, 1, 2
EDITED, DELETED, INSERTED = "edited", "deleted", "inserted"
KINDS = (EDITED, DELETED, INSERTED)
FETCH_ROWS = 1000
PROGRESS_EVERY = 20_000
CONNECT_TIMEOUT_S = 10.0
UNCHAINED = "(no chain)"
UNREACHABLE: tuple[type[Exception], ...] = (TimeoutError, *CONNECTION_ERRORS)

SELECT_CHAINED = f"""
SELECT id, {", ".join(RECORD_FIELDS)}, chain_writer, chain_seq, prev_hash, row_hash
FROM access_logs
WHERE chain_writer IS NOT NULL
ORDER BY chain_writer, chain_seq
"""
SELECT_HEADS = "SELECT writer, last_seq, last_hash FROM access_log_chains"
# Records without a link: those before the first chained record are pre-chain.
SELECT_UNCHAINED = """
WITH boundary AS (SELECT min(id) AS first FROM access_logs WHERE chain_writer IS NOT NULL)
SELECT
    boundary.first,
    count(id) FILTER (WHERE boundary.first IS NULL OR id < boundary.first) AS before,
    min(id) FILTER (WHERE boundary.first IS NULL OR id < boundary.first) AS before_min,
    max(id) FILTER (WHERE boundary.first IS NULL OR id < boundary.first) AS before_max,
    count(id) FILTER (WHERE id > boundary.first) AS after,
    min(id) FILTER (WHERE id > boundary.first) AS after_first
FROM boundary LEFT JOIN access_logs ON access_logs.chain_writer IS NULL
GROUP BY boundary.first
"""
SELECT_EVENT_ID = "SELECT event_id FROM access_logs WHERE id = $1"
# The pre-chain records as they are now, to compare with the seal migration 0002 wrote.
SELECT_PRE_CHAIN = f"""
WITH boundary AS (SELECT min(id) AS first FROM access_logs WHERE chain_writer IS NOT NULL)
SELECT count(*) AS records, {PRE_CHAIN_DIGEST} AS digest
FROM access_logs, boundary
WHERE chain_writer IS NULL AND (boundary.first IS NULL OR id < boundary.first)
"""
# The planner's row count: free, and good enough for a progress line.
ESTIMATE_ROWS = (
    "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'access_logs'::regclass"
)


class UsageError(Exception):
    """A bad argument or an unusable database: one line, exit status 2."""


@dataclass(frozen=True)
class Anchor:
    """A chain head recorded elsewhere earlier: ``writer``'s record ``seq`` had ``row_hash``."""

    writer: str
    seq: int
    row_hash: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        writer, _, rest = text.rpartition(":")
        writer, _, seq = writer.rpartition(":")
        ok = writer and seq.isdigit() and len(rest) == 64
        if not ok or any(c not in "0123456789abcdef" for c in rest):
            msg = f"--anchor {text!r}: expected WRITER:SEQ:HASH (HASH: 64 lowercase hex)"
            raise UsageError(msg)
        return cls(writer, int(seq), rest)


@dataclass
class ChainWalk:
    """One writer's chain as the walk found it: its last accepted link and its findings."""

    writer: str
    recorded: tuple[int, str] | None  # (last_seq, last_hash) from access_log_chains
    anchors: dict[int, str] = field(default_factory=dict)
    records: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    last_where: str = ""  # the last accepted record: seq, id, event id
    last_ref: str = ""  # the same, short: id (seq)
    first: dict[str, str] = field(default_factory=dict)
    counts: collections.Counter[str] = field(default_factory=collections.Counter)

    def note(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        self.first.setdefault(kind, text)

    @property
    def tampered(self) -> bool:
        return bool(self.counts)

    def add(self, row: Mapping[str, Any]) -> None:
        self.records += 1
        seq, prev, stored = row["chain_seq"], row["prev_hash"], row["row_hash"]
        where = f"seq {seq}, id {row['id']}, event {row['event_id']}"
        ref = f"id {row['id']} (seq {seq})"
        if seq is None or prev is None or stored is None:  # only once the table's check is gone
            self.note(INSERTED, f"{where}: its link columns are empty")
            return
        if self.recorded is not None and seq > self.recorded[0]:
            self.note(
                INSERTED, f"{where}: beyond the chain's recorded head (seq {self.recorded[0]})"
            )
            return
        content_ok = link_hash(self.writer, seq, prev, row) == stored
        expected = self.last_seq + 1
        if content_ok and seq == expected and prev == self.last_hash:
            pass
        elif content_ok and seq == expected and self.last_where:
            self.note(
                EDITED,
                f"{self.last_where}: rewritten with a new hash "
                f"(the next record, {ref}, still links to the old one)",
            )
        elif content_ok and seq == expected:
            self.note(EDITED, f"{where}: its prev_hash is not the chain's start")
        elif content_ok and seq > expected:
            missing = seq - expected
            span = f"seq {expected}" if missing == 1 else f"seq {expected}-{seq - 1}"
            between = f"between {self.last_ref} and" if self.last_ref else "before"
            self.note(DELETED, f"{span} ({_records(missing)}), {between} {ref}")
        elif not content_ok and seq == expected and prev == self.last_hash:
            self.note(EDITED, f"{where}: its columns no longer match its hash")
        else:
            self.note(INSERTED, f"{where}: fits no link of the chain")
            return  # skipped: the chain goes on from the record before it
        anchored = self.anchors.pop(seq, None)
        if anchored is not None and anchored != stored:
            self.note(EDITED, f"{where}: its hash is not the anchor's (rewritten since)")
        self.last_seq, self.last_hash = seq, stored
        self.last_where, self.last_ref = where, ref

    def finish(self) -> None:
        """What only the end can tell: records cut off the end, anchors never reached."""
        if self.recorded is None:
            self.note(DELETED, "the chain's recorded head (access_log_chains) is missing")
        else:
            head_seq, head_hash = self.recorded
            if head_seq > self.last_seq:
                missing = head_seq - self.last_seq
                span = f"seq {self.last_seq + 1}" + (f"-{head_seq}" if missing > 1 else "")
                after = f"after {self.last_ref}" if self.last_ref else "(the whole chain)"
                self.note(
                    DELETED,
                    f"{span} ({_records(missing)}) {after}: the recorded head is seq {head_seq}",
                )
            elif head_seq == self.last_seq and head_hash != self.last_hash:
                self.note(EDITED, f"{self.last_where}: its hash is not the recorded head's")
        for seq in sorted(self.anchors):
            self.note(DELETED, f"seq {seq} (named by an anchor): not in the chain")
        self.anchors.clear()


@dataclass
class Unchained:
    """Records without a link: ``before`` the first chained record (pre-chain) or ``after``."""

    before: int = 0
    before_ids: tuple[int, int] | None = None
    after: int = 0
    after_first: str = ""
    # Set when the pre-chain records are not the set migration 0002 sealed.
    seal_broken: str = ""


@dataclass
class Report:
    chains: list[ChainWalk]
    unchained: Unchained

    @property
    def tampered(self) -> bool:
        return (
            self.unchained.after > 0
            or bool(self.unchained.seal_broken)
            or any(chain.tampered for chain in self.chains)
        )


def _records(count: int) -> str:
    return f"{count} record" + ("" if count == 1 else "s")


class Progress:
    """``checked N of about M records`` redrawn on a terminal; nothing when not a terminal."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self._stream = stream if stream.isatty() else None
        self._total = total
        self._shown = False

    def __call__(self, checked: int) -> None:
        if self._stream is not None:
            about = f" of about {self._total:,}" if self._total >= checked else ""
            self._stream.write(f"\rchecked {checked:,}{about} records")
            self._stream.flush()
            self._shown = True

    def close(self) -> None:
        if self._stream is not None and self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()


async def walk(
    conn: asyncpg.Connection,
    anchors: Sequence[Anchor] = (),
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Walk every chain in ``conn``'s database (one snapshot) and say what was found;
    ``progress`` hears the number of records checked every :data:`PROGRESS_EVERY`."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        recorded = {
            row["writer"]: (row["last_seq"], row["last_hash"])
            for row in await conn.fetch(SELECT_HEADS)
        }
        seal = recorded.pop(PRE_CHAIN_WRITER, None)
        wanted: dict[str, dict[int, str]] = collections.defaultdict(dict)
        for anchor in anchors:
            wanted[anchor.writer][anchor.seq] = anchor.row_hash
        chains: list[ChainWalk] = []
        current: ChainWalk | None = None
        checked = 0
        async for row in conn.cursor(SELECT_CHAINED, prefetch=FETCH_ROWS):
            writer = row["chain_writer"]
            if current is None or current.writer != writer:
                if current is not None:
                    current.finish()
                current = ChainWalk(writer, recorded.pop(writer, None), wanted.pop(writer, {}))
                chains.append(current)
            current.add(row)
            checked += 1
            if progress is not None and checked % PROGRESS_EVERY == 0:
                progress(checked)
        if current is not None:
            current.finish()
        # Chains whose every record is gone, but whose head (or an anchor) remains.
        for writer in sorted({*recorded, *wanted}):
            chain = ChainWalk(writer, recorded.get(writer), wanted.get(writer, {}))
            chain.finish()
            chains.append(chain)
        unchained = await _unchained(conn, seal)
    return Report(chains, unchained)


async def _unchained(conn: asyncpg.Connection, seal: tuple[int, str] | None) -> Unchained:
    row = await conn.fetchrow(SELECT_UNCHAINED)
    found = Unchained(before=row["before"], after=row["after"])
    now = await conn.fetchrow(SELECT_PRE_CHAIN)
    if seal is None:
        if now["records"]:
            found.seal_broken = "the seal migration 0002 wrote over them is gone"
    elif (now["records"], now["digest"]) != seal:
        found.seal_broken = (
            f"not the set migration 0002 sealed ({_records(seal[0])} then, "
            f"{_records(now['records'])} now): a record was added among them or deleted"
        )
    if row["before"]:
        found.before_ids = (row["before_min"], row["before_max"])
    if row["after"]:
        event_id = await conn.fetchval(SELECT_EVENT_ID, row["after_first"])
        found.after_first = (
            f"id {row['after_first']}, event {event_id}: stored without a link after the "
            f"chains began (id {row['first']} is the first chained record)"
        )
    return found


def render(report: Report, out: TextIO) -> None:
    """The report for a reader: findings per chain, the chain heads, one closing line."""
    for chain in report.chains:
        state = "TAMPERED" if chain.tampered else "intact"
        print(f'chain "{chain.writer}": {_records(chain.records)}, {state}', file=out)
        for kind in KINDS:
            if kind in chain.first:
                more = chain.counts[kind] - 1
                tail = f" (and {more} more)" if more else ""
                print(f"  {kind:<9} {chain.first[kind]}{tail}", file=out)
    found = report.unchained
    if found.after:
        others = f" (and {found.after - 1} more)" if found.after > 1 else ""
        print(f"{UNCHAINED}: {_records(found.after)}, TAMPERED", file=out)
        print(f"  {INSERTED:<9} {found.after_first}{others}", file=out)
    if found.before_ids is not None:
        low, high = found.before_ids
        print(
            f"pre-chain: {_records(found.before)} (ids {low}..{high}) stored before the chain "
            "existed; their content is not covered",
            file=out,
        )
    if found.seal_broken:
        print(f"pre-chain records: TAMPERED, {found.seal_broken}", file=out)
    if not report.chains and not found.before and not found.after and not found.seal_broken:
        print("the audit trail is empty", file=out)
    heads = [(c.writer, str(c.last_seq), c.last_hash) for c in report.chains if c.records]
    if heads:
        print(
            "\nchain heads (keep a copy elsewhere; pass it back with --anchor WRITER:SEQ:HASH):",
            file=out,
        )
        print(_aligned([("writer", "last seq", "last hash"), *heads]), file=out)
    unchained_tampered = bool(found.after or found.seal_broken)
    tampered = [c for c in report.chains if c.tampered] + ([found] if unchained_tampered else [])
    findings = (
        sum(sum(c.counts.values()) for c in report.chains)
        + found.after
        + (1 if found.seal_broken else 0)
    )
    if tampered:
        print(
            f"\nTAMPERED: {findings} finding(s) in {len(tampered)} of "
            f"{len(report.chains) + (1 if unchained_tampered else 0)} chain(s)",
            file=out,
        )
    else:
        total = sum(c.records for c in report.chains)
        print(f"\nintact: {len(report.chains)} chain(s), {_records(total)}", file=out)


def _aligned(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def verify(database: DatabaseSettings, anchors: Sequence[Anchor], out: TextIO) -> int:
    """Connect, walk, print the report; the exit status (0 intact, 1 tampered)."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            conn = await database.connect()
    except UNREACHABLE as exc:
        msg = f"cannot reach the logging database ({database.display_url}): {describe(exc)}"
        raise UsageError(msg) from None
    progress: Progress | None = None
    try:
        progress = Progress(sys.stderr, await conn.fetchval(ESTIMATE_ROWS))
        report = await walk(conn, anchors, progress)
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        msg = (
            f"the logging database ({database.display_url}) has no audit chain yet: "
            "run `multidb migrate logging`"
        )
        raise UsageError(msg) from None
    except CONNECTION_ERRORS as exc:
        raise UsageError(f"the logging database went away: {describe(exc)}") from None
    except asyncpg.PostgresError as exc:  # a login that may not read the table, say
        raise UsageError(f"reading the audit trail failed: {describe(exc)}") from None
    finally:
        if progress is not None:
            progress.close()
        with contextlib.suppress(*CONNECTION_ERRORS):
            await conn.close()
    print(f"audit trail of {database.display_url}\n", file=out)
    render(report, out)
    return EXIT_TAMPERED if report.tampered else EXIT_INTACT


def cmd_verify(args: argparse.Namespace) -> int:
    """``multidb audit verify``: find the logging database as every command does, then walk."""
    try:
        anchors = [Anchor.parse(text) for text in args.anchor]
        roles = get_roles()
        with contextlib.ExitStack() as resources:
            env = command_environment(resources, start_database=True)
            database = load_settings(env, roles).databases.get("logging")
            if database is None:
                # This module's own role registered the command: it is installed.
                host = variable_name(roles["logging"], "host")
                msg = f"role 'logging' has no database configured (set {host})"
                raise UsageError(msg)
            return asyncio.run(verify(database, anchors, sys.stdout))
    except UsageError as exc:
        print(f"multidb audit verify: {exc}", file=sys.stderr)
        return EXIT_ERROR


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``multidb audit verify`` (the logging role's plugin calls this from its hook)."""
    audit = commands.add_parser("audit", help="the audit trail of the logging database")
    verbs = audit.add_subparsers(dest="audit_command", required=True)
    check = verbs.add_parser(
        "verify",
        help="walk every hash chain of access_logs; report edited, deleted and inserted records",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "--anchor",
        action="append",
        default=[],
        metavar="WRITER:SEQ:HASH",
        help="a chain head printed by an earlier run: the record must still have that hash",
    )
    check.set_defaults(run=cmd_verify)
