"""The local stack in one command (``make run``): PostgreSQL, migrations, every role's service.

When the environment (or ``.env``) names database servers (``DB_HOST`` ...), those are
used; otherwise an embedded PostgreSQL runs from ``.data/pg`` (kept between runs). A
development API key and JWT secret are generated once into ``.data/credentials.json``
unless ``API_KEYS``/``JWT_SECRET`` are set. Ctrl-C stops everything this started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

import msgspec

from multidb import migrations
from multidb.embedded import EmbeddedPostgres
from multidb.plugins import get_roles
from multidb.settings import SettingsError, load_settings, read_environment

DATA = Path(".data")
READY_TIMEOUT_S = 60.0


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    api_key: str
    jwt_secret: str


def _credentials(folder: Path) -> Credentials:
    path = folder / "credentials.json"
    if path.exists():
        return msgspec.json.decode(path.read_bytes(), type=Credentials)
    made = Credentials(api_key=secrets.token_urlsafe(24), jwt_secret=secrets.token_urlsafe(48))
    path.write_bytes(msgspec.json.encode(made))
    path.chmod(0o600)
    return made


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(folder: Path) -> Path:
    lock = folder / "stack.pid"
    if lock.exists():
        text = lock.read_text().strip()
        if text.isdigit() and _pid_alive(int(text)):
            msg = f"the local stack is already running (pid {text}); stop it with Ctrl-C first"
            raise SystemExit(msg)
    lock.write_text(str(os.getpid()))
    return lock


def _wait_ready(url: str, process: subprocess.Popen[bytes], role: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            msg = f"the {role} service exited with code {process.returncode}"
            raise SystemExit(msg)
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=1) as response,  # noqa: S310 - our own http URL
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    msg = f"the {role} service was not ready within {READY_TIMEOUT_S:.0f} s ({url})"
    raise SystemExit(msg)


def main() -> int:
    DATA.mkdir(exist_ok=True)
    lock = _claim(DATA)
    env = read_environment()
    roles = get_roles()
    server: EmbeddedPostgres | None = None
    processes: dict[str, subprocess.Popen[bytes]] = {}

    def stop(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        if not env.get("DB_HOST"):
            print("starting the embedded PostgreSQL in .data/pg ...", flush=True)
            server = EmbeddedPostgres(DATA / "pg")
            server.start()
            asyncio.run(server.create_databases(spec.database for spec in roles.values()))
            env.update(server.environment(roles))
        credentials = _credentials(DATA)
        env.setdefault("API_KEYS", credentials.api_key)
        env.setdefault("JWT_SECRET", credentials.jwt_secret)
        try:
            settings = load_settings(env, roles)
        except SettingsError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        for name, database in settings.databases.items():
            print(f"migrating {name} ...", flush=True)
            migrations.upgrade(roles[name], "head", database)
        child_env = {**os.environ, **env, "MULTI_DB_ENV_FILE": os.devnull}
        for name in settings.databases:
            processes[name] = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "multidb.service", name], env=child_env
            )
        for name, process in processes.items():
            port = int(env.get(f"MULTI_DB_{name.upper()}_SERVICE_PORT", roles[name].port))
            _wait_ready(f"http://127.0.0.1:{port}/readyz", process, name)
            print(f"  {name:<10} http://127.0.0.1:{port}  (docs: /schema)", flush=True)
        print(
            f"ready. API key: {env['API_KEYS'].split(',')[0]}  (Ctrl-C stops everything)",
            flush=True,
        )
        while all(process.poll() is None for process in processes.values()):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        if server is not None:
            server.stop()
        lock.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
