"""The SCRAM-SHA-256 verifier against RFC 7677's example exchange (user "user", "pencil")."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from multidb.scram import scram_sha256_verifier

# RFC 7677, section 3.
CLIENT_FIRST_BARE = "n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL_WITHOUT_PROOF = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
CLIENT_PROOF = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
SERVER_SIGNATURE = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
SHAPE = re.compile(r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)")


def test_the_verifier_checks_the_rfc_exchange_as_a_server_would() -> None:
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = scram_sha256_verifier("pencil", salt=salt, iterations=4096)
    match = SHAPE.fullmatch(verifier)
    assert match, verifier
    iterations, salt_b64, stored_b64, server_b64 = match.groups()
    assert (iterations, salt_b64) == ("4096", "W22ZaJ0SNY7soEsUEjb6gQ==")
    stored_key, server_key = base64.b64decode(stored_b64), base64.b64decode(server_b64)
    auth_message = f"{CLIENT_FIRST_BARE},{SERVER_FIRST},{CLIENT_FINAL_WITHOUT_PROOF}".encode()
    # The server's check (RFC 5802, section 3): H(ClientProof XOR ClientSignature) == StoredKey.
    client_signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = base64.b64decode(CLIENT_PROOF)
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    # ... and the server's own signature, which the client checks.
    signature = hmac.digest(server_key, auth_message, "sha256")
    assert base64.b64encode(signature).decode() == SERVER_SIGNATURE


def test_each_verifier_has_a_fresh_16_byte_salt() -> None:
    first, second = scram_sha256_verifier("secret"), scram_sha256_verifier("secret")
    assert first != second
    for verifier in (first, second):
        match = SHAPE.fullmatch(verifier)
        assert match, verifier
        assert match.group(1) == "4096"
        assert len(base64.b64decode(match.group(2))) == 16
        assert "secret" not in verifier


def test_a_password_that_needs_saslprep_is_refused() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        scram_sha256_verifier("pässword")
