"""The platform's apps log through :class:`multidb.log_handler.LogShipper`: a real app
process, the real gateway and logging service, the logging service killed and restarted
while the app logs. Every record ends up stored exactly once, or counted as dropped."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from multidb.plugins import get_roles
from multidb.settings import load_settings
from tests.conftest import API_KEY
from tests.fleet import ProcessFleet

RECORDS = 3000
WAIT_S = 90.0

APP = textwrap.dedent(
    """
    import json, logging, sys, time
    from multidb.log_handler import LogShipper

    url, key, marker, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    handler = LogShipper(url, api_key=key, flush_interval_s=0.2, max_backoff_s=1.0,
                         shutdown_timeout_s=60)
    log = logging.getLogger("app.orders")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    for i in range(total):
        log.info("order %s %d", marker, i, extra={"request_id": f"req-{i}", "shop": "north"})
        if i == total // 3:
            print("third", flush=True)
            sys.stdin.readline()  # the test stops the logging service meanwhile
        time.sleep(0.001)
    try:
        raise ValueError(f"broken order {marker}")
    except ValueError:
        log.exception("order failed %s", marker, extra={"request_id": "req-error"})
    handler.close()
    print(json.dumps({"sent": handler.sent, "dropped": handler.dropped}), flush=True)
    """
)


@pytest.fixture(scope="module")
def fleet(
    database_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessFleet]:
    with ProcessFleet(
        database_env, tmp_path_factory.mktemp("log-handler-logs")
    ).running() as running:
        yield running


async def _rows(database_env: dict[str, str], marker: str) -> dict[str, Any]:
    settings = load_settings(database_env, get_roles())
    conn = await settings.databases["logging"].connect()
    try:
        logs = await conn.fetchrow(
            "SELECT count(*) AS total, count(DISTINCT message) AS messages, "
            "count(DISTINCT event_id) AS ids, count(*) FILTER (WHERE request_id IS NULL) AS no_request "
            "FROM application_logs WHERE message LIKE $1",
            f"order {marker} %",
        )
        sample = await conn.fetchrow(
            "SELECT level, logger, request_id, context FROM application_logs WHERE message = $1",
            f"order {marker} 0",
        )
        error = await conn.fetchrow(
            "SELECT error_type, message, stack_trace, request_id FROM error_logs WHERE message LIKE $1",
            f"%broken order {marker}%",
        )
        await conn.execute("DELETE FROM application_logs WHERE message LIKE $1", f"%{marker}%")
        await conn.execute("DELETE FROM error_logs WHERE message LIKE $1", f"%{marker}%")
    finally:
        await conn.close()
    return {
        "logs": dict(logs),
        "sample": dict(sample) if sample else None,
        "error": dict(error) if error else None,
    }


def test_records_survive_a_logging_service_restart_exactly_once(
    fleet: ProcessFleet, database_env: dict[str, str]
) -> None:
    marker = uuid.uuid4().hex[:12]
    app = subprocess.Popen(
        [
            sys.executable,
            "-c",
            APP,
            f"{fleet.gateway}/database/logging/logs",
            API_KEY,
            marker,
            str(RECORDS),
        ],
        env=fleet.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert app.stdin is not None
    assert app.stdout is not None
    try:
        assert app.stdout.readline().strip() == "third"
        fleet.stop("logging", signal.SIGKILL)
        app.stdin.write("go\n")
        app.stdin.flush()
        # The app logs on while the service is down; then it comes back.
        fleet.start("logging")
        out, _ = app.communicate(timeout=WAIT_S)
    finally:
        if app.poll() is None:
            app.kill()
    assert app.returncode == 0
    counts = json.loads(out.strip().splitlines()[-1])
    found = asyncio.run(_rows(database_env, marker))
    logs = found["logs"]
    # Exactly once: no record twice, and what is not stored was counted as dropped.
    assert logs["total"] == logs["messages"] == logs["ids"]
    assert logs["total"] + counts["dropped"] == RECORDS
    assert counts["sent"] == RECORDS + 1  # and the exception's own line
    assert counts["dropped"] == 0, counts  # the queue (10,000) held the outage
    assert logs["no_request"] == 0
    sample = found["sample"]
    assert sample is not None
    assert (sample["level"], sample["logger"], sample["request_id"]) == (
        "INFO",
        "app.orders",
        "req-0",
    )
    context = sample["context"]
    assert (json.loads(context) if isinstance(context, str) else context) == {"shop": "north"}
    error = found["error"]
    assert error is not None
    assert error["error_type"] == "ValueError"
    assert "Traceback" in error["stack_trace"]
    assert "broken order" in error["stack_trace"]
    assert error["request_id"] == "req-error"


def test_a_full_queue_drops_and_counts_never_blocks(tmp_path: Path) -> None:
    """Nothing listens: the caller still returns at once, and every record is accounted for."""
    script = textwrap.dedent(
        """
        import json, logging, time
        from multidb.log_handler import LogShipper
        handler = LogShipper("http://127.0.0.1:9/logs", capacity=100, shutdown_timeout_s=0.5)
        log = logging.getLogger("app"); log.propagate = False; log.addHandler(handler)
        started = time.perf_counter()
        for i in range(5000):
            log.warning("w %d", i)
        took = time.perf_counter() - started
        handler.close()
        print(json.dumps({"took_s": took, "sent": handler.sent, "dropped": handler.dropped}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["sent"] == 0
    assert counts["dropped"] == 5000
    assert counts["took_s"] < 2.0  # 5000 calls, none waiting on the network
    # Logged once, not once per record.
    assert done.stderr.count("dropping log records") == 1, done.stderr


def test_odd_records_are_cut_or_counted_never_fatal(
    fleet: ProcessFleet, database_env: dict[str, str]
) -> None:
    """A cyclic extra, an exception whose str() raises and a 200 kB message: the sender
    thread lives on, what can be sent is sent (cut to the field limit), the rest counted."""
    marker = uuid.uuid4().hex[:12]
    script = textwrap.dedent(
        """
        import json, logging, sys
        from multidb.log_handler import LogShipper
        url, key, marker = sys.argv[1], sys.argv[2], sys.argv[3]
        handler = LogShipper(url, api_key=key, flush_interval_s=0.1)
        log = logging.getLogger("app.odd"); log.propagate = False; log.addHandler(handler)
        log.setLevel(logging.INFO)
        cyclic = {}; cyclic["self"] = cyclic
        log.info("order %s cyclic", marker, extra={"cyclic": cyclic})
        log.info("order %s long " + "x" * 200_000, marker)
        class Odd(Exception):
            def __str__(self):
                raise RuntimeError("no str")
        try:
            raise Odd()
        except Odd:
            log.exception("order %s odd", marker)
        log.info("order %s last", marker)
        handler.close()
        print(json.dumps({"sent": handler.sent, "dropped": handler.dropped}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, f"{fleet.gateway}/database/logging/logs", API_KEY, marker],
        env=fleet.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    found = asyncio.run(_rows(database_env, marker))
    # The exception whose str() raises cannot be encoded: counted; the others are stored.
    assert counts == {"sent": 3, "dropped": 1}, (counts, done.stderr)
    assert found["logs"]["total"] == 3
