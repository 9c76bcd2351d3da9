"""A newcomer's path: clone, ``make run``, call the gateway with the printed key, Ctrl-C."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.clone_stack import ROLES, ClonedStack, clone


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClonedStack]:
    cloned = ClonedStack(clone(tmp_path_factory.mktemp("fresh")))
    yield cloned
    if cloned.process is not None and cloned.process.poll() is None:
        cloned.stop()


@pytest.mark.timeout(900)
def test_make_run_on_a_fresh_clone_serves_four_healthy_roles_and_stops_clean(
    stack: ClonedStack,
) -> None:
    stack.start()
    assert stack.api_key, "make run prints the key to use"
    assert httpx.get(f"{stack.gateway}/readyz", timeout=10).status_code == 200
    response = httpx.get(
        f"{stack.gateway}/database/health", headers={"X-API-Key": stack.api_key}, timeout=10
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == list(ROLES)
    assert all(report["status"] == "healthy" for report in body.values())
    # Encrypted and verified by default: every role reaches the embedded server verify-full.
    backup = httpx.get(
        f"{stack.gateway}/database/backup/info", headers={"X-API-Key": stack.api_key}, timeout=10
    ).json()
    assert {info["sslmode"] for info in backup.values()} == {"verify-full"}

    # A crashed service is restarted (with backoff) and the fleet is whole again.
    victim = next(
        process
        for process in psutil.process_iter(["cmdline"])
        if f"--port {stack.ports['analytics']}" in " ".join(process.info["cmdline"] or [])
    )
    victim.kill()
    # The backoff is seconds; a cold start of a service on two busy cores is the rest.
    deadline = time.monotonic() + 90
    while True:
        response = httpx.get(
            f"{stack.gateway}/database/health", headers={"X-API-Key": stack.api_key}, timeout=10
        )
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert response.status_code == 200

    second = ClonedStack(stack.folder)
    second.ports = stack.ports
    with pytest.raises(RuntimeError, match="already running"):
        second.start(timeout_s=120)

    # make re-raises the SIGINT it got once its child (multidb up) has cleaned up.
    assert stack.stop() in {0, -2}
    assert stack.leftovers() == []
    # The crash was logged, and the restart too.
    assert any("analytics exited with code" in line for line in stack.output)
    assert any("restarting analytics" in line for line in stack.output)
    assert (Path(stack.folder) / ".data" / "credentials.json").exists()


@pytest.mark.timeout(600)
def test_make_run_uses_the_servers_the_environment_names(
    tmp_path: Path, database_env: dict[str, str]
) -> None:
    named = ClonedStack(clone(tmp_path), extra_env={**database_env, "API_KEYS": "named-key"})
    named.start()
    try:
        assert any(
            "using the database servers named by the environment" in line for line in named.output
        )
        assert named.api_key == "named-key"
        response = httpx.get(
            f"{named.gateway}/database/health", headers={"X-API-Key": "named-key"}, timeout=10
        )
        assert response.status_code == 200
        assert {report["database_name"] for report in response.json().values()} == {
            "ocr_identity_db",
            "ocr_analytics_db",
            "ocr_logging_db",
            "ocr_archive_db",
        }
    finally:
        named.stop()
    assert not (named.folder / ".data" / "pg").exists(), "no embedded server was started"
    assert named.leftovers() == []


@pytest.mark.timeout(600)
def test_make_run_that_cannot_start_a_service_says_why_and_leaves_nothing(
    tmp_path: Path, database_env: dict[str, str]
) -> None:
    stack = ClonedStack(clone(tmp_path), extra_env=database_env)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", stack.ports["analytics"]))
        taken.listen()
        with pytest.raises(RuntimeError, match="never said it was ready"):
            stack.start(timeout_s=300)
    assert any(
        "multidb up: the analytics process exited with code" in line for line in stack.output
    ), "".join(stack.output[-20:])
    assert not any("Traceback" in line for line in stack.output)
    assert stack.leftovers() == []
