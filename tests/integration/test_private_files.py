"""The embedded server's secrets at rest: its state file and initdb's password file."""

from __future__ import annotations

import os
from pathlib import Path

from multidb_devstack.embedded import EmbeddedPostgres
from tests.file_audit import mode, watch_files


def test_a_new_cluster_writes_its_password_only_into_private_files(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    with watch_files(tmp_path) as seen:
        server.initialise()  # a real initdb with the password file
    state = server.folder / "state.json"
    assert mode(state) == 0o600
    assert server.state.password
    secret_files = {state.name, "initdb.pw"}
    written = {
        Path(path).name.split(".")[1]: flags  # ".state.json.XXXX.tmp" -> "state"
        for path, flags in seen.created()
        if Path(path).name.startswith(tuple(f".{name}." for name in secret_files))
    }
    assert set(written) == {"state", "initdb"}, seen.events
    assert all(flags & os.O_EXCL for flags in written.values())
    assert set(seen.renamed_modes.values()) == {0o600}
    assert not [p for p in seen.chmodded() if Path(p).name in secret_files], "no chmod window"
    assert not (server.folder / "initdb.pw").exists(), "the password file is gone after initdb"
