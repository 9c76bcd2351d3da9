"""The audit chain's hashing and the verifier's reading of a chain, without a database.

The database half (rows written by the logging service, tampered with SQL, verified by the
``multidb`` process) is ``tests/integration/test_audit_chain.py``.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from multidb.audit_records import AccessRecord
from multidb_logging.chain import GENESIS, RECORD_FIELDS, canonical, link_hash
from multidb_logging.store import storable
from multidb_logging.verify import (
    DELETED,
    EDITED,
    INSERTED,
    Anchor,
    ChainWalk,
    Progress,
    Report,
    Unchained,
    UsageError,
    render,
)

WRITER = "multidb-gateway"
MOMENT = datetime(2026, 12, 1, 10, 30, 15, 123456, tzinfo=UTC)


def fields(number: int = 1, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "event_id": f"{number:032x}",
        "created_at": MOMENT + timedelta(seconds=number),
        "request_id": f"req-{number}",
        "principal": "api-key:ci",
        "auth_method": "api_key",
        "method": "POST",
        "path": "/database/default/execute",
        "target_role": "default",
        "query_fingerprint": "ab" * 32,
        "query_preview": "SELECT 1",
        "read_only": True,
        "outcome": "allowed",
        "status_code": 200,
        "row_count": 1,
        "duration_ms": 2.5,
        "error": None,
        "client_ip": "127.0.0.1",
    }
    values.update(changes)
    return values


def chain(length: int, writer: str = WRITER) -> list[dict[str, Any]]:
    """Rows of an untouched chain, as the verifier reads them (id = seq)."""
    rows, prev = [], GENESIS
    for seq in range(1, length + 1):
        row_hash = link_hash(writer, seq, prev, fields(seq))
        rows.append(
            {
                "id": seq,
                **fields(seq),
                "chain_writer": writer,
                "chain_seq": seq,
                "prev_hash": prev,
                "row_hash": row_hash,
            }
        )
        prev = row_hash
    return rows


def walked(
    rows: list[dict[str, Any]], head: int | None = None, writer: str = WRITER, **kwargs: Any
) -> ChainWalk:
    """Walk ``rows``; the recorded head is the untouched chain's at ``head`` (default: the
    last row's seq), unless ``recorded`` is given."""
    seq = head if head is not None else rows[-1]["chain_seq"]
    recorded = (seq, chain(seq, writer)[-1]["row_hash"])
    walk = ChainWalk(writer, kwargs.pop("recorded", recorded), **kwargs)
    for row in rows:
        walk.add(row)
    walk.finish()
    return walk


def test_the_hash_covers_every_field_of_the_record_and_nothing_else() -> None:
    assert set(RECORD_FIELDS) == set(AccessRecord.__struct_fields__)


def test_the_canonical_form_is_pinned() -> None:
    # Links already stored must verify forever: version 1 of the form never changes.
    assert canonical(WRITER, 7, GENESIS, fields()) == (
        b'["multidb.access_logs.v1","multidb-gateway",7,"' + GENESIS.encode() + b'",'
        b'"00000000000000000000000000000001","2026-12-01T10:30:16.123456+00:00","req-1",'
        b'"api-key:ci","api_key","POST","/database/default/execute","default",'
        b'"' + b"ab" * 32 + b'","SELECT 1",true,"allowed",200,1,2.5,null,"127.0.0.1"]'
    )
    assert link_hash(WRITER, 7, GENESIS, fields()) == (
        "7cc6012a572b550dff0344b8eab3a82791879fad1a5097bf38a531753557687d"
    )


def test_the_same_stored_values_hash_alike_however_they_are_written() -> None:
    paris = timezone(timedelta(hours=1))
    reference = link_hash(WRITER, 1, GENESIS, fields())
    local_time = fields(created_at=(MOMENT + timedelta(seconds=1)).astimezone(paris))
    assert link_hash(WRITER, 1, GENESIS, local_time) == reference
    assert link_hash(WRITER, 1, GENESIS, fields(duration_ms=2.5)) == reference
    whole = fields(duration_ms=3)
    assert link_hash(WRITER, 1, GENESIS, whole) == link_hash(
        WRITER, 1, GENESIS, fields(duration_ms=3.0)
    )


@pytest.mark.parametrize(
    "change",
    [
        {"principal": "api-key:someone-else"},
        {"outcome": "refused"},
        {"status_code": 403},
        {"read_only": False},
        {"row_count": None},
        {"error": ""},
        {"created_at": MOMENT + timedelta(seconds=1, microseconds=1)},
    ],
)
def test_any_change_of_a_field_changes_the_hash(change: dict[str, Any]) -> None:
    assert link_hash(WRITER, 1, GENESIS, fields(**change)) != link_hash(
        WRITER, 1, GENESIS, fields()
    )


def test_the_link_is_hashed_too() -> None:
    reference = link_hash(WRITER, 2, GENESIS, fields())
    assert link_hash("other", 2, GENESIS, fields()) != reference
    assert link_hash(WRITER, 3, GENESIS, fields()) != reference
    assert link_hash(WRITER, 2, "1" * 64, fields()) != reference


def test_the_writer_hashes_what_the_row_will_hold() -> None:
    record = AccessRecord(**fields(method="POST-AND-MUCH-MORE", query_preview="a\x00b"))
    values = storable(record)
    assert values["method"] == "POST-AND-M"  # String(10)
    assert values["query_preview"] == "a\ufffdb"  # text cannot hold NUL


def test_an_untouched_chain_is_intact() -> None:
    walk = walked(chain(5))
    assert not walk.tampered
    assert (walk.records, walk.last_seq) == (5, 5)


def test_an_edited_record_is_found_where_it_is() -> None:
    rows = chain(5)
    rows[2]["principal"] = "someone-else"
    walk = walked(rows)
    assert set(walk.counts) == {EDITED}
    assert walk.first[EDITED].startswith("seq 3, id 3, event ")
    assert "no longer match its hash" in walk.first[EDITED]


def test_a_record_rewritten_with_a_new_hash_is_found_by_the_next_link() -> None:
    rows = chain(5)
    rows[2]["principal"] = "someone-else"
    rows[2]["row_hash"] = link_hash(WRITER, 3, rows[2]["prev_hash"], rows[2])
    walk = walked(rows, head=5)
    assert walk.counts[EDITED] == 1
    assert walk.first[EDITED].startswith("seq 3, id 3, event ")
    assert "rewritten with a new hash (the next record, id 4 (seq 4)," in walk.first[EDITED]


def test_deleted_records_are_a_gap() -> None:
    rows = chain(8)
    del rows[5]
    del rows[2:4]
    walk = walked(rows)
    assert walk.counts == {DELETED: 2}
    assert walk.first[DELETED] == "seq 3-4 (2 records), between id 2 (seq 2) and id 5 (seq 5)"


def test_records_cut_off_the_end_are_found_by_the_recorded_head() -> None:
    rows = chain(6)[:4]
    walk = walked(rows, head=6)
    assert walk.counts == {DELETED: 1}
    assert walk.first[DELETED] == (
        "seq 5-6 (2 records) after id 4 (seq 4): the recorded head is seq 6"
    )
    lost_head = walked(chain(3), recorded=None)
    assert "recorded head (access_log_chains) is missing" in lost_head.first[DELETED]


def test_an_inserted_record_fits_no_link() -> None:
    rows = chain(5)
    forged = {**rows[1], "id": 99, "event_id": "f" * 32, "chain_seq": 9, "row_hash": "e" * 64}
    walk = walked([*rows, forged], head=5)
    assert walk.counts[INSERTED] == 1
    assert walk.first[INSERTED].startswith("seq 9, id 99, event ffff")
    assert "beyond the chain's recorded head (seq 5)" in walk.first[INSERTED]
    # Numbered like a record that exists: it fits no link, and the chain goes on without it.
    double = {**chain(5)[2], "id": 77, "event_id": "d" * 32, "chain_seq": 3}
    walk = walked([*chain(3), double, *chain(5)[3:]])
    assert walk.counts == {INSERTED: 1}
    assert "fits no link of the chain" in walk.first[INSERTED]


def test_an_anchor_catches_a_chain_rewritten_from_end_to_end() -> None:
    honest = chain(4)
    rewritten, prev = [], GENESIS
    for row in honest:
        changed = {**row, "principal": "nobody", "prev_hash": prev}
        changed["row_hash"] = link_hash(WRITER, row["chain_seq"], prev, changed)
        rewritten.append(changed)
        prev = changed["row_hash"]
    recorded = (4, rewritten[-1]["row_hash"])  # the head table rewritten too
    assert not walked(rewritten, recorded=recorded).tampered
    anchored = walked(rewritten, recorded=recorded, anchors={3: honest[2]["row_hash"]})
    assert anchored.counts == {EDITED: 1}
    assert "its hash is not the anchor's" in anchored.first[EDITED]
    beyond = walked(honest, anchors={9: "a" * 64})
    assert beyond.first[DELETED] == "seq 9 (named by an anchor): not in the chain"


def test_anchors_are_parsed_from_the_right() -> None:
    anchor = Anchor.parse("api-key:ci:12:" + "ab" * 32)
    assert (anchor.writer, anchor.seq, anchor.row_hash) == ("api-key:ci", 12, "ab" * 32)
    for bad in ("", "gateway", "gateway:x:" + "a" * 64, "gateway:3:abc", ":3:" + "a" * 64):
        with pytest.raises(UsageError, match="WRITER:SEQ:HASH"):
            Anchor.parse(bad)


def test_the_report_reads_as_findings_heads_and_one_closing_line() -> None:
    rows = chain(6)
    rows[1]["outcome"] = "refused"
    del rows[3]
    out = io.StringIO()
    render(
        Report(
            [walked(rows), walked(chain(2, "other"), writer="other")],
            Unchained(before=3, before_ids=(1, 3)),
        ),
        out,
    )
    text = out.getvalue()
    assert 'chain "multidb-gateway": 5 records, TAMPERED' in text
    assert "  edited    seq 2, id 2" in text
    assert "  deleted   seq 4 (1 record), between id 3 (seq 3) and id 5 (seq 5)" in text
    assert "pre-chain: 3 records (ids 1..3)" in text
    assert text.rstrip().endswith("TAMPERED: 2 finding(s) in 1 of 2 chain(s)")
    assert f"multidb-gateway  6         {rows[-1]['row_hash']}" in text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_drawn_on_a_terminal_only() -> None:
    terminal = Terminal()
    progress = Progress(terminal, 1_000_000)
    progress(20_000)
    progress.close()
    assert terminal.getvalue() == "\rchecked 20,000 of about 1,000,000 records\r\033[K"
    piped = io.StringIO()
    quiet = Progress(piped, 10)
    quiet(20_000)
    quiet.close()
    assert piped.getvalue() == ""
