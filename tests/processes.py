"""Helpers for tests that start real service processes."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")


def wait_ready(process: subprocess.Popen[bytes], url: str, timeout_s: float = 30) -> None:
    """Poll ``url`` until it answers 200; fail with the process output if it dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else "(see its log)"
            pytest.fail(f"{process.args!r} exited with {process.returncode}: {output}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{url} never became ready")


def poll(check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"never happened within {timeout_s} s: {what}")
        time.sleep(0.05)


async def until(check: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = 30.0) -> T:
    """Await ``check`` until it gives something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"never happened within {timeout_s:.0f} s: {what}")
        await asyncio.sleep(0.05)
