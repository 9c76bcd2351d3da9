"""Credentials: API keys (plain and sha256), JWTs (exp required, scopes), clear refusals."""

from __future__ import annotations

import hashlib
import time

import jwt
import pytest
from litestar.exceptions import NotAuthorizedException

from multidb.auth import ALL_SCOPES, Authenticator, mint_token

SECRET = "unit-test-secret-long-enough-for-hs256-and-for-the-hs512-refusal-case-too"


def test_plain_and_hashed_api_keys_hold_every_scope() -> None:
    stored = "sha256:" + hashlib.sha256(b"second").hexdigest()
    authenticator = Authenticator(SECRET, ["first", stored])
    for presented in ("first", "second"):
        principal = authenticator.authenticate(None, presented)
        assert principal.method == "api_key"
        assert principal.scopes == ALL_SCOPES
        assert presented not in principal.subject
    with pytest.raises(NotAuthorizedException, match="invalid API key"):
        authenticator.authenticate(None, stored)


def test_minted_token_round_trips_with_its_scopes() -> None:
    authenticator = Authenticator(SECRET, [])
    principal = authenticator.authenticate(f"Bearer {mint_token(SECRET, 'ops', ['db:read'])}", None)
    assert (principal.subject, principal.method, principal.scopes) == (
        "ops",
        "jwt",
        frozenset({"db:read"}),
    )


def test_space_separated_scope_claim_and_unknown_scopes_dropped() -> None:
    claims = {"sub": "x", "scope": "db:read db:root", "exp": int(time.time()) + 60}
    principal = Authenticator(SECRET, []).from_jwt(jwt.encode(claims, SECRET, algorithm="HS256"))
    assert principal.scopes == frozenset({"db:read"})


@pytest.mark.parametrize(
    ("claims", "algorithm", "message"),
    [
        ({"sub": "x"}, "HS256", 'Token is missing the "exp" claim'),
        ({"sub": "x", "exp": 1}, "HS256", "token expired"),
        ({"exp": 4102444800}, "HS256", 'Token is missing the "sub" claim'),
        ({"sub": "x", "exp": 4102444800}, "HS512", "The specified alg value is not allowed"),
    ],
)
def test_bad_tokens_are_refused(claims: dict[str, object], algorithm: str, message: str) -> None:
    token = jwt.encode(claims, SECRET, algorithm=algorithm)
    with pytest.raises(NotAuthorizedException) as caught:
        Authenticator(SECRET, []).authenticate(f"Bearer {token}", None)
    assert message in caught.value.detail


def test_unsigned_token_is_refused() -> None:
    token = jwt.encode({"sub": "x", "exp": 4102444800}, key="", algorithm="none")
    with pytest.raises(NotAuthorizedException):
        Authenticator(SECRET, []).authenticate(f"Bearer {token}", None)


def test_jwt_without_configured_secret_is_refused() -> None:
    token = mint_token(SECRET, "x", ["db:read"])
    with pytest.raises(NotAuthorizedException, match="no JWT_SECRET"):
        Authenticator("", []).authenticate(f"Bearer {token}", None)


def test_mint_token_rejects_unknown_scopes() -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        mint_token(SECRET, "x", ["db:everything"])


INTERNAL = "internal-service-secret-of-at-least-32-characters"


def test_tokens_signed_with_either_secret_are_accepted() -> None:
    authenticator = Authenticator(SECRET, [], INTERNAL)
    for secret in (SECRET, INTERNAL):
        token = mint_token(secret, "caller", ["db:read"])
        assert authenticator.authenticate(f"Bearer {token}", None).subject == "caller"
    # Only the service secret configured: its tokens still work.
    internal = mint_token(INTERNAL, "multidb-gateway", ["db:admin"])
    principal = Authenticator("", [], INTERNAL).authenticate(f"Bearer {internal}", None)
    assert principal.scopes == frozenset({"db:admin"})


def test_a_token_signed_with_neither_secret_is_refused() -> None:
    token = mint_token("some-other-secret-nobody-configured-here-0000", "x", ["db:read"])
    with pytest.raises(NotAuthorizedException, match="invalid token: Signature verification"):
        Authenticator(SECRET, [], INTERNAL).authenticate(f"Bearer {token}", None)
    expired = mint_token(INTERNAL, "x", ["db:read"], lifetime_s=-10)
    with pytest.raises(NotAuthorizedException, match="token expired"):
        Authenticator(SECRET, [], INTERNAL).authenticate(f"Bearer {expired}", None)


def test_ingest_write_is_a_scope_for_every_database_or_one() -> None:
    token = mint_token(SECRET, "app", ["ingest:write:logging", "db:read"])
    principal = Authenticator(SECRET, []).authenticate(f"Bearer {token}", None)
    assert principal.scopes == frozenset({"ingest:write:logging", "db:read"})
    assert principal.allows("ingest:write", "logging")
    assert not principal.allows("ingest:write", "analytics")
    assert not principal.allows("ingest:write", None)
    # db:read does not imply ingest:write, nor the other way round.
    reader = Authenticator(SECRET, []).authenticate(
        f"Bearer {mint_token(SECRET, 'r', ['db:read'])}", None
    )
    assert not reader.allows("ingest:write", "logging")
    assert "ingest:write" in ALL_SCOPES
    with pytest.raises(ValueError, match="unknown scope"):
        mint_token(SECRET, "x", ["ingest:read"])
