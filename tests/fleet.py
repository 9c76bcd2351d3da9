"""The four role services and the gateway as real processes, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from multidb_devstack.embedded import free_port
from tests.conftest import API_KEY, BUILTIN_ROLES, JWT_SECRET
from tests.processes import wait_ready

GATEWAY = "gateway"


class ProcessFleet:
    """Starts, stops and restarts services and the gateway on free ports; logs to ``logs``."""

    def __init__(self, database_env: dict[str, str], logs: Path, **extra: str) -> None:
        self.logs = logs
        self.ports = {name: free_port() for name in [*BUILTIN_ROLES, GATEWAY]}
        self.env = {
            **os.environ,
            **database_env,
            "API_KEYS": API_KEY,
            "JWT_SECRET": JWT_SECRET,
            "MULTI_DB_ENV_FILE": os.devnull,
            "MULTI_DB_EXECUTE_TIMEOUT_MS": "1500",
            "MULTI_DB_SERVICE_TIMEOUT_MS": "1000",
            "MULTI_DB_HEALTH_REFRESH_MS": "200",
            **{f"MULTI_DB_{role.upper()}_SERVICE_URL": self.url(role) for role in BUILTIN_ROLES},
            **extra,
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def gateway(self) -> str:
        return self.url(GATEWAY)

    def command(self, name: str) -> list[str]:
        port = str(self.ports[name])
        if name == GATEWAY:
            # The installed console script, as the README says to run it.
            return [str(Path(sys.executable).parent / "multidb-gateway"), "--port", port]
        return [sys.executable, "-m", "multidb.service", name, "--port", port]

    def start(self, name: str, env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            self.command(name),
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes[name] = process
        wait_ready(process, f"{self.url(name)}/readyz")

    @contextlib.contextmanager
    def running(self) -> Iterator[ProcessFleet]:
        """Every service and the gateway, started now and stopped at the end."""
        try:
            self.start_all()
            yield self
        finally:
            self.close()

    @contextlib.contextmanager
    def running_only(self, *names: str) -> Iterator[ProcessFleet]:
        """Only ``names``, started now in that order and stopped at the end."""
        try:
            for name in names:
                self.start(name)
            yield self
        finally:
            self.close()

    def start_all(self) -> None:
        for name in [*BUILTIN_ROLES, GATEWAY]:
            self.start(name)

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> int:
        process = self.processes.pop(name)
        process.send_signal(sig)
        return process.wait(timeout=20)

    def close(self) -> None:
        for name in list(self.processes):
            self.stop(name)
