"""``make run`` in a fresh clone of this repository: start, read what it prints, stop.

Used by the test that a newcomer's two commands work, and by ``make bench`` for the
time from ``make run`` to ready.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil

from multidb_devstack.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("default", "analytics", "logging", "archive")


def clone(into: Path) -> Path:
    target = into / "multidb-clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True)
    return target


class ClonedStack:
    """``make run`` in ``folder`` on free ports, with none of this process's settings."""

    def __init__(self, folder: Path, extra_env: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.extra_env = extra_env or {}
        self.ports = {name: free_port() for name in (*ROLES, "gateway")}
        self.process: subprocess.Popen[str] | None = None
        self.api_key = ""
        self.output: list[str] = []

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def _env(self) -> dict[str, str]:
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DB_", "MULTI_DB_", "VIRTUAL_ENV", "UV_PROJECT"))
            and key not in {"API_KEYS", "JWT_SECRET"}
        }
        ports = {f"MULTI_DB_{role.upper()}_SERVICE_PORT": str(self.ports[role]) for role in ROLES}
        gateway = {"MULTI_DB_GATEWAY_PORT": str(self.ports["gateway"])}
        return {**inherited, **ports, **gateway, **self.extra_env}

    def start(self, timeout_s: float = 600) -> float:
        """Run ``make run``; return the seconds until it printed that it is ready."""
        started = time.monotonic()
        self.process = subprocess.Popen(
            ["make", "run"],
            cwd=self.folder,
            env=self._env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        deadline = started + timeout_s
        for line in self.process.stdout:
            self.output.append(line)
            found = re.search(r"ready\. API key: (\S+)", line)
            if found:
                self.api_key = found.group(1)
                return time.monotonic() - started
            if time.monotonic() > deadline:
                break
        self.stop()
        msg = "make run never said it was ready:\n" + "".join(self.output[-40:])
        raise RuntimeError(msg)

    def stop(self) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to the foreground process group."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)
        assert self.process.stdout is not None
        self.output.extend(self.process.stdout)
        return self.process.wait(timeout=60)

    def leftovers(self) -> list[str]:
        """Processes still alive that this clone started (its venv, its data folder)."""
        marker = str(self.folder)
        found = []
        for process in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(process.info["cmdline"] or [])
            if marker in cmdline:
                found.append(f"{process.info['pid']}: {cmdline}")
        return found
