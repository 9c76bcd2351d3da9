"""Run one role's service: ``python -m multidb.service <role> [--host H] [--port P]``.

The port defaults to ``MULTI_DB_<ROLE>_SERVICE_PORT``, else the role's default port.
Bad settings stop start-up with one line naming the variable.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from multidb import tls
from multidb.logs import configure_logging
from multidb.plugins import get_roles
from multidb.service.app import create_role_app
from multidb.settings import SettingsError, get_settings, read_environment


def main(argv: list[str] | None = None) -> int:
    env = read_environment()  # the process environment over .env, as for every setting
    roles = get_roles()
    parser = argparse.ArgumentParser(prog="python -m multidb.service", description=__doc__)
    parser.add_argument("role", choices=list(roles))
    parser.add_argument("--host", default=env.get("MULTI_DB_SERVICE_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    spec = roles[args.role]
    try:
        configure_logging("service", args.role, env)
        settings = get_settings()
        if args.role not in settings.databases:
            msg = f"role {args.role!r} has no database configured: set {spec.prefix}HOST"
            raise SettingsError(msg)
        # The certificate files are read now: one that is missing is a start-up line.
        tls.ssl_argument(settings.databases[args.role])
        port = args.port or int(env.get(f"MULTI_DB_{spec.name.upper()}_SERVICE_PORT", spec.port))
    except (SettingsError, ValueError) as exc:
        print(f"multidb {args.role}: configuration error: {exc}", file=sys.stderr)
        return 2
    app = create_role_app(args.role, settings)
    # log_config=None: uvicorn's loggers keep the handler configure_logging set (their
    # levels too); access lines stay off, the audit trail and execute lines cover execute.
    uvicorn.run(app, host=args.host, port=port, log_config=None, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
