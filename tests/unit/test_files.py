"""``multidb.files.write_private``: 0600 from the first byte, atomic, no leftovers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from multidb.files import write_private
from tests.file_audit import mode, watch_files


def test_the_file_is_0600_even_under_umask_0_and_never_chmodded(tmp_path: Path) -> None:
    target = tmp_path / "secret.json"
    with watch_files(tmp_path) as seen:
        write_private(target, b"s3cret")
    assert target.read_bytes() == b"s3cret"
    # Under umask 0 the creation mode shows unmasked: 0600 is what the file was made with.
    assert mode(target) == 0o600
    [(created, flags)] = seen.created()
    assert flags & (os.O_CREAT | os.O_EXCL) == os.O_CREAT | os.O_EXCL, "created new, never reused"
    assert Path(created).parent == target.parent, "beside the target: the rename is atomic"
    assert created != str(target), "written under another name, then renamed"
    assert seen.renamed_modes == {created: 0o600}
    assert seen.chmodded() == [], "no window: never another mode, then a chmod"


def test_replacing_keeps_0600_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    target.chmod(0o644)  # an older, looser file is replaced by a private one
    with watch_files(tmp_path):
        write_private(target, b"new")
    assert (target.read_bytes(), mode(target)) == (b"new", 0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_write_keeps_the_old_content_and_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_private(target, b"old")
    with pytest.raises(TypeError):
        write_private(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_the_folder_is_made_when_missing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "credentials.json"
    write_private(target, b"{}")
    assert mode(target) == 0o600
