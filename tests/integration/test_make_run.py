"""A newcomer's path: clone, ``make run``, call the gateway with the printed key, Ctrl-C."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
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
    response = httpx.get(
        f"{stack.gateway}/database/health", headers={"X-API-Key": stack.api_key}, timeout=10
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == list(ROLES)
    assert all(report["status"] == "healthy" for report in body.values())

    second = ClonedStack(stack.folder)
    second.ports = stack.ports
    with pytest.raises(RuntimeError, match="already running"):
        second.start(timeout_s=120)

    # make re-raises the SIGINT it got once its child (multidb up) has cleaned up.
    assert stack.stop() in {0, -2}
    assert stack.leftovers() == []
    assert (Path(stack.folder) / ".data" / "credentials.json").exists()
