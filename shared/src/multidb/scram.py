"""SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677) made client-side, as ``psql``'s ``\\password``.

``ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'`` stores the verifier as given: the server,
its statement log and ``pg_stat_statements`` never see the password itself. No library
in our dependencies makes one (asyncpg does the client side of the exchange only; libpq's
``PQencryptPasswordConn`` would need psycopg), and the recipe is a few lines of stdlib.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)
SALT_BYTES = 16  # as PostgreSQL makes them


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scram_sha256_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS
) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` for ``password``.

    PostgreSQL normalises a password with SASLprep before hashing; for ASCII, which is all
    we hash (the execute logins' passwords are hex), SASLprep changes nothing, so other
    passwords are refused rather than hashed differently from what the server expects.
    """
    if not password.isascii():
        msg = "only ASCII passwords: SASLprep normalisation is not implemented"
        raise ValueError(msg)
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"
