"""``make run``'s development credentials: made once, completed when an older file lacks one."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from multidb.plugins import get_roles
from multidb.settings import load_settings
from multidb_devstack.stack import load_credentials
from tests.file_audit import mode, watch_files


def test_credentials_are_made_once_with_a_usable_service_secret(tmp_path: Path) -> None:
    made = load_credentials(tmp_path)
    assert load_credentials(tmp_path) == made
    assert stat.S_IMODE((tmp_path / "credentials.json").stat().st_mode) == 0o600
    settings = load_settings(made.environment(), get_roles())
    assert settings.service_secret == made.service_secret
    assert len(made.service_secret) >= 32  # the setting's minimum


def test_an_older_file_gains_a_service_secret_and_keeps_the_rest(tmp_path: Path) -> None:
    older = {"api_key": "kept-key", "jwt_secret": "kept-secret"}
    (tmp_path / "credentials.json").write_text(json.dumps(older))
    completed = load_credentials(tmp_path)
    assert (completed.api_key, completed.jwt_secret) == ("kept-key", "kept-secret")
    assert completed.service_secret
    assert json.loads((tmp_path / "credentials.json").read_text())["service_secret"] == (
        completed.service_secret
    )


def test_the_credentials_file_is_private_from_its_first_byte(tmp_path: Path) -> None:
    with watch_files(tmp_path) as seen:
        load_credentials(tmp_path)
    assert mode(tmp_path / "credentials.json") == 0o600  # under umask 0: the creation mode
    assert seen.created(), "the file was created"
    assert all(flags & os.O_EXCL for _, flags in seen.created())
    assert seen.chmodded() == []


def test_completing_an_older_loose_file_makes_it_private(tmp_path: Path) -> None:
    older = tmp_path / "credentials.json"
    older.write_text(json.dumps({"api_key": "kept-key", "jwt_secret": "kept-secret"}))
    older.chmod(0o644)
    load_credentials(tmp_path)
    assert mode(older) == 0o600
