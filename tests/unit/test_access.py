"""Per-database scopes, the API keys file and JWT rotation, without a server."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from pathlib import Path

import jwt
import pytest
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from multidb import cli
from multidb.api_keys import KeysFile, NamedKey, dump_keys, load_keys
from multidb.auth import Authenticator, Principal, check_write, mint_token, require
from multidb.jwt_keys import jwt_keys_from_env, signing_key
from multidb.plugins import get_roles
from multidb.settings import SettingsError, load_settings

ROLES = get_roles()
OLD = "old-secret-of-at-least-thirty-two-characters"
NEW = "new-secret-of-at-least-thirty-two-characters"


def principal(*scopes: str) -> Principal:
    return Principal(subject="t", method="jwt", scopes=frozenset(scopes))


# ---- scopes --------------------------------------------------------------------------


def test_a_bare_scope_covers_every_database_and_a_named_one_only_its_own() -> None:
    caller = principal("db:read", "db:execute:analytics")
    assert caller.allows("db:read", None)
    assert caller.allows("db:read", "default")
    assert caller.allows("db:execute", "analytics")
    assert not caller.allows("db:execute", "default")
    assert not caller.allows("db:execute", None)  # "every database" needs the bare scope
    assert caller.roles_allowed("db:execute", ["default", "analytics", "logging"]) == ["analytics"]
    assert caller.roles_allowed("db:read", ["default", "archive"]) == ["default", "archive"]
    assert caller.allows_somewhere("db:execute")
    assert not caller.allows_somewhere("db:admin")


def test_require_and_check_write_name_the_scopes_that_would_do() -> None:
    caller = principal("db:execute:analytics")
    require(caller, "db:execute", "analytics")
    with pytest.raises(PermissionDeniedException) as refused:
        require(caller, "db:execute", "default")
    assert "'db:execute' or 'db:execute:default'" in refused.value.detail
    check_write(caller, True, "analytics")  # reading needs no db:write
    with pytest.raises(PermissionDeniedException, match="'db:write' or 'db:write:analytics'"):
        check_write(caller, False, "analytics")
    check_write(principal("db:write:analytics"), False, "analytics")
    # Ingestion's action is checked the same way.
    require(principal("ingest:write:analytics"), "ingest:write", "analytics")
    with pytest.raises(PermissionDeniedException, match="'ingest:write' or 'ingest:write:logging'"):
        require(principal("ingest:write:analytics", "db:write"), "ingest:write", "logging")


def test_tokens_carry_per_database_scopes_and_drop_malformed_ones() -> None:
    token = mint_token(OLD, "etl", ["db:read:analytics", "db:execute:analytics"])
    caller = Authenticator(OLD, []).authenticate(f"Bearer {token}", None)
    assert caller.scopes == frozenset({"db:read:analytics", "db:execute:analytics"})
    claims = {"sub": "x", "scopes": ["db:read:a b", "db:root:default", "db:admin:x"], "exp": 2**40}
    odd = jwt.encode(claims, OLD, algorithm="HS256")
    assert Authenticator(OLD, []).authenticate(f"Bearer {odd}", None).scopes == {"db:admin:x"}
    with pytest.raises(ValueError, match="unknown scope"):
        mint_token(OLD, "x", ["db:read:"])


# ---- the API keys file -----------------------------------------------------------------


def key_entry(name: str, key: str, *scopes: str) -> NamedKey:
    return NamedKey(name=name, sha256=hashlib.sha256(key.encode()).hexdigest(), scopes=scopes)


@pytest.mark.parametrize("suffix", [".toml", ".json", ""])
def test_keys_file_round_trips_in_toml_and_json(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"keys{suffix}"
    keys = [key_entry("etl", "k1", "db:read:analytics"), key_entry("ops", "k2", "db:admin")]
    path.write_bytes(dump_keys(path, keys))
    assert list(load_keys(path)) == keys
    if suffix == ".json":
        assert json.loads(path.read_text())["keys"][0]["name"] == "etl"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[keys]]\nname = 'etl'\n", "entry 1 ('etl'): Object missing required field `sha256`"),
        (
            f"[[keys]]\nname = 'etl'\nsha256 = '{'a' * 64}'\nscopes = ['db:root']\n",
            "entry 1 ('etl'): unknown scope(s) 'db:root'",
        ),
        (
            "[[keys]]\nname = 'etl'\nsha256 = 'abc'\nscopes = []\n",
            "entry 1 ('etl'): sha256: Expected `str` matching regex",
        ),
        (
            f"[[keys]]\nname = 'etl'\nsha256 = '{'a' * 64}'\nscopes = []\nscope = 1\n",
            "entry 1 ('etl'): Object contains unknown field `scope`",
        ),
        (
            f"[[keys]]\nname='a'\nsha256='{'a' * 64}'\nscopes=[]\n"
            f"[[keys]]\nname='a'\nsha256='{'b' * 64}'\nscopes=[]\n",
            "entry 2: the name 'a' is used twice",
        ),
        (
            f"[[keys]]\nname='a'\nsha256='{'a' * 64}'\nscopes=[]\n"
            f"[[keys]]\nname='b'\nsha256='{'A' * 64}'\nscopes=[]\n",
            "entry 2 ('b'): the same key (sha256) as another entry",
        ),
        ("[[keys]\n", "not valid TOML"),
    ],
)
def test_a_bad_keys_file_is_one_line_naming_the_file_and_entry(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(content)
    with pytest.raises(SettingsError) as caught:
        load_settings({"MULTI_DB_API_KEYS_FILE": str(path)}, ROLES)
    text = str(caught.value)
    assert text.startswith(f"MULTI_DB_API_KEYS_FILE: {path}: ")
    assert message in text
    assert "\n" not in text


def test_a_missing_keys_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"cannot read it: No such file"):
        load_settings({"MULTI_DB_API_KEYS_FILE": str(tmp_path / "none.toml")}, ROLES)


def test_named_keys_hold_their_scopes_and_follow_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.toml"
    path.write_bytes(dump_keys(path, [key_entry("etl", "etl-key", "db:read:analytics")]))
    authenticator = Authenticator("", ["plain-key"], keys_file=KeysFile(path))
    caller = authenticator.authenticate(None, "etl-key")
    assert (caller.subject, caller.method) == ("api-key:etl", "api_key")
    assert caller.scopes == frozenset({"db:read:analytics"})
    assert authenticator.authenticate(None, "plain-key").allows("db:admin", None)

    # A key added to the file works at once; one taken out is refused at once.
    path.write_bytes(dump_keys(path, [key_entry("ops", "ops-key", "db:admin")]))
    assert authenticator.authenticate(None, "ops-key").subject == "api-key:ops"
    with pytest.raises(NotAuthorizedException, match="invalid API key"):
        authenticator.authenticate(None, "etl-key")

    # A file that no longer reads grants nothing, and says so in the log once.
    path.write_text("[[keys]\n")
    with caplog.at_level(logging.ERROR, logger="multidb.auth"):
        for _ in range(2):
            with pytest.raises(NotAuthorizedException):
                authenticator.authenticate(None, "ops-key")
    assert [r.getMessage() for r in caplog.records].count(
        f"API keys file unusable, none of its keys is accepted: {path}: not valid TOML: "
        "Expected ']]' at the end of an array declaration (at line 1, column 7)"
    ) == 1
    assert authenticator.authenticate(None, "plain-key").method == "api_key"


# ---- JWT secrets and rotation ---------------------------------------------------------------


def test_jwt_secret_alone_works_as_before() -> None:
    keys = jwt_keys_from_env({"JWT_SECRET": OLD})
    assert signing_key(keys.legacy, keys.by_kid) == (None, OLD)
    token = mint_token(OLD, "ops", ["db:read"])
    assert "kid" not in jwt.get_unverified_header(token)
    # Without JWT_SECRETS a kid header selects nothing: the token is checked as before.
    labelled = mint_token(OLD, "ops", ["db:read"], kid="whatever-a-client-sets")
    assert Authenticator(OLD, []).authenticate(f"Bearer {labelled}", None).subject == "ops"
    forged = mint_token(NEW, "ops", ["db:read"], kid="whatever-a-client-sets")
    with pytest.raises(NotAuthorizedException, match="Signature verification failed"):
        Authenticator(OLD, []).authenticate(f"Bearer {forged}", None)


def test_the_newest_kid_signs_older_ones_verify_until_removed() -> None:
    settings = load_settings({"JWT_SECRETS": f"k2:{NEW},\nk1:{OLD}"}, ROLES)
    assert list(settings.jwt_keys) == ["k2", "k1"]
    assert signing_key(settings.jwt_secret, settings.jwt_keys) == ("k2", NEW)
    old = mint_token(OLD, "a", ["db:read"], kid="k1")
    new = mint_token(NEW, "b", ["db:read"], kid="k2")
    both = Authenticator.from_settings(settings)
    assert both.authenticate(f"Bearer {old}", None).subject == "a"
    assert both.authenticate(f"Bearer {new}", None).subject == "b"

    rotated = Authenticator.from_settings(load_settings({"JWT_SECRETS": f"k2:{NEW}"}, ROLES))
    assert rotated.authenticate(f"Bearer {new}", None).subject == "b"
    with pytest.raises(NotAuthorizedException) as refused:
        rotated.authenticate(f"Bearer {old}", None)
    assert refused.value.detail.startswith("invalid token: unknown key id (kid) 'k1'")
    # A kid is not a way around its secret: the right kid with another secret fails.
    forged = mint_token(OLD, "a", ["db:read"], kid="k2")
    with pytest.raises(NotAuthorizedException, match="Signature verification failed"):
        rotated.authenticate(f"Bearer {forged}", None)
    # Without a kid, only JWT_SECRET (or the service secret) can have signed it.
    bare = mint_token(NEW, "c", ["db:read"])
    with pytest.raises(NotAuthorizedException, match="no key id \\(kid\\), and no JWT_SECRET"):
        rotated.authenticate(f"Bearer {bare}", None)


def test_jwt_secret_and_secrets_together_kidless_tokens_keep_working() -> None:
    settings = load_settings({"JWT_SECRET": OLD, "JWT_SECRETS": f"k2:{NEW}"}, ROLES)
    authenticator = Authenticator.from_settings(settings)
    legacy = mint_token(OLD, "legacy", ["db:read"])
    assert authenticator.authenticate(f"Bearer {legacy}", None).subject == "legacy"


def test_secrets_come_from_files(tmp_path: Path) -> None:
    single = tmp_path / "jwt_secret"
    single.write_text(OLD + "\n")
    several = tmp_path / "jwt_secrets"
    several.write_text(f"# newest first\nk2:{NEW}\n\nk1:{OLD}\n")
    env = {"JWT_SECRET_FILE": str(single), "JWT_SECRETS_FILE": str(several)}
    settings = load_settings(env, ROLES)
    assert settings.jwt_secret == OLD
    assert settings.jwt_keys == {"k2": NEW, "k1": OLD}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JWT_SECRET": "x", "JWT_SECRET_FILE": "/f"}, "JWT_SECRET_FILE: set either"),
        ({"JWT_SECRET_FILE": "/no/such/file"}, "JWT_SECRET_FILE: cannot read /no/such/file"),
        ({"JWT_SECRETS": "no-colon-here"}, "JWT_SECRETS: entry 1 must be 'kid:secret'"),
        ({"JWT_SECRETS": "k1:tiny-value"}, "JWT_SECRETS: the secret of key id 'k1' is shorter"),
        ({"JWT_SECRETS": f"k1:{OLD},k1:{NEW}"}, "JWT_SECRETS: key id 'k1' appears twice"),
        ({"JWT_SECRETS": " , "}, "JWT_SECRETS: holds no 'kid:secret' entry"),
    ],
)
def test_bad_jwt_secrets_are_one_line_naming_the_variable(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env, ROLES)
    assert str(caught.value).startswith(message)
    for secret in (OLD, NEW, "tiny-value"):
        assert secret not in str(caught.value)


# ---- the multidb command -----------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_key_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "secrets" / "keys.toml"
    code, out, err = run_cli(
        capsys, "key", "create", "etl", "--scopes", "db:read:analytics,db:execute:analytics",
        "--file", str(path),
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(
        capsys, "key", "create", "app", "--scopes", "ingest:write:logging", "--file", str(path)
    )
    assert code == 0, err
    assert run_cli(capsys, "key", "revoke", "app", "--file", str(path))[0] == 0
    key = out.strip()
    assert key.startswith("mdbk_")
    assert "shown this once" in err
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert key not in path.read_text()
    [entry] = load_keys(path)
    assert (entry.name, entry.scopes) == ("etl", ("db:read:analytics", "db:execute:analytics"))
    caller = Authenticator("", [], keys_file=KeysFile(path)).authenticate(None, key)
    assert caller.subject == "api-key:etl"

    code, out, err = run_cli(
        capsys, "key", "create", "etl", "--scopes", "db:read", "--file", str(path)
    )
    assert (code, out) == (1, "")
    assert "a key named 'etl' exists" in err

    code, out, _ = run_cli(capsys, "key", "list", "--file", str(path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "scopes", "created"]
    assert lines[1].split()[:2] == ["etl", "db:read:analytics,db:execute:analytics"]
    assert entry.sha256 not in out
    assert entry.sha256[:8] not in out

    assert run_cli(capsys, "key", "revoke", "etl", "--file", str(path))[0] == 0
    assert load_keys(path) == ()
    code, _, err = run_cli(capsys, "key", "revoke", "etl", "--file", str(path))
    assert (code, err.strip()) == (1, f"no key named 'etl' in {path}")


@pytest.mark.parametrize(
    ("name", "scopes", "message"),
    [
        ("etl", "db:read:analytcs", "no installed role named 'analytcs'"),
        ("etl", "ingest:write:logs", "no installed role named 'logs'"),
        ("etl", "db:everything", "unknown scope(s) db:everything"),
        ("etl", "", "name at least one scope"),
        ("no spaces", "db:read", "a key's name is letters"),
    ],
)
def test_key_create_refuses_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, scopes: str, message: str
) -> None:
    path = tmp_path / "keys.json"
    code, out, err = run_cli(capsys, "key", "create", name, "--scopes", scopes, "--file", str(path))
    assert (code, out) == (2, "")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not path.exists()


def test_key_commands_need_a_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MULTI_DB_API_KEYS_FILE", raising=False)
    code, _, err = run_cli(capsys, "key", "list")
    assert code == 2
    assert "MULTI_DB_API_KEYS_FILE is not set" in err


def test_token_signs_with_the_newest_kid(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JWT_SECRETS", f"k2:{NEW},k1:{OLD}")
    monkeypatch.delenv("JWT_SECRET", raising=False)
    code, out, err = run_cli(capsys, "token", "--scopes", "db:execute:analytics", "--subject", "me")
    assert code == 0, err
    token = out.strip()
    assert jwt.get_unverified_header(token)["kid"] == "k2"
    assert jwt.decode(token, NEW, algorithms=["HS256"])["scopes"] == ["db:execute:analytics"]
    code, out, err = run_cli(capsys, "token", "--scopes", "db:read:nowhere")
    assert (code, out) == (2, "")
    assert "no installed role named 'nowhere'" in err
