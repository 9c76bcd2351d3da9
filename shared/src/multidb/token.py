"""Mint a JWT: ``python -m multidb.token --scopes db:read,db:execute [--lifetime 3600]``.

Signed with ``JWT_SECRET`` from the environment (or ``.env``); prints the token alone, so
``TOKEN=$(python -m multidb.token --scopes db:read)`` works.
"""

from __future__ import annotations

import argparse
import sys

from multidb.auth import ALL_SCOPES, mint_token
from multidb.settings import read_environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m multidb.token", description=__doc__)
    parser.add_argument(
        "--scopes", default="db:read", help=f"comma-separated, of: {', '.join(sorted(ALL_SCOPES))}"
    )
    parser.add_argument("--lifetime", type=int, default=3600, help="seconds (default 3600)")
    parser.add_argument("--subject", default="cli", help="who the token is for (the 'sub' claim)")
    args = parser.parse_args(argv)
    secret = read_environment().get("JWT_SECRET", "")
    if not secret:
        print("JWT_SECRET is not set (environment or .env)", file=sys.stderr)
        return 2
    scopes = [scope.strip() for scope in args.scopes.split(",") if scope.strip()]
    try:
        print(mint_token(secret, args.subject, scopes, args.lifetime))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
