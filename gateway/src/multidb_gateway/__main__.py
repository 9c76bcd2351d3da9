"""Run the gateway: ``multidb-gateway [--host H] [--port P]`` (default 127.0.0.1:8000).

Bad settings stop start-up with one line naming the variable.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from multidb.logs import configure_logging
from multidb.settings import SettingsError, read_environment
from multidb_gateway.app import create_gateway_app
from multidb_gateway.settings import get_gateway_settings


def main(argv: list[str] | None = None) -> int:
    env = read_environment()  # the process environment over .env, as for every setting
    parser = argparse.ArgumentParser(prog="multidb-gateway", description=__doc__)
    parser.add_argument("--host", default=env.get("MULTI_DB_GATEWAY_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("MULTI_DB_GATEWAY_PORT", "8000")))
    args = parser.parse_args(argv)
    try:
        configure_logging("gateway", env=env)
        settings = get_gateway_settings()
    except SettingsError as exc:
        print(f"multidb gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        create_gateway_app(settings),
        host=args.host,
        port=args.port,
        # Logging stays as configure_logging set it; access lines stay off (the audit
        # trail and the execute lines cover execute).
        log_config=None,
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
