"""multidb.logs on its own: the two settings, the format by terminal, the lines' shape."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from multidb.logs import (
    FORMAT_VARIABLE,
    LOG_VARIABLES,
    LogSettings,
    configure_logging,
    execute_line,
    load_log_settings,
    resolve_format,
)
from multidb.plugins import get_roles
from multidb.settings import SettingsError
from multidb_devstack.stack import _children

EXAMPLE_ENV = Path(__file__).resolve().parents[2] / "config.multi_db.example.env"


@pytest.fixture
def terminal() -> Iterator[io.TextIOWrapper]:
    """A real pseudo-terminal's writing end."""
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as stream:
        yield stream
    os.close(leader)


@pytest.fixture
def root_logger(monkeypatch: pytest.MonkeyPatch) -> logging.Logger:
    """The root logger, its handlers and level given back after the test."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    return root


def test_defaults_and_case() -> None:
    assert load_log_settings({}) == LogSettings(format="auto", level="INFO")
    assert load_log_settings({"MULTI_DB_LOG_FORMAT": " JSON ", "MULTI_DB_LOG_LEVEL": "debug"}) == (
        LogSettings(format="json", level="DEBUG")
    )


@pytest.mark.parametrize(
    ("variable", "value"), [("MULTI_DB_LOG_FORMAT", "xml"), ("MULTI_DB_LOG_LEVEL", "LOUD")]
)
def test_a_bad_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}: must be one of .*'{value}'"):
        load_log_settings({variable: value})


def test_auto_is_human_on_a_terminal_and_json_otherwise(terminal: io.TextIOWrapper) -> None:
    assert resolve_format("auto", terminal) == "human"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", terminal) == "json"
    assert resolve_format("human", io.StringIO()) == "human"


def test_the_supervisor_hands_its_format_down(
    terminal: io.TextIOWrapper, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Children of `multidb up` write to its terminal: they use the format it resolved."""
    roles = get_roles()
    for stream, expected in ((terminal, "human"), (io.StringIO(), "json")):
        monkeypatch.setattr(sys, "stderr", stream)
        children = _children({}, roles, ["default"])
        assert {child.env[FORMAT_VARIABLE] for child in children} == {expected}
    explicit = _children({FORMAT_VARIABLE: "json"}, roles, ["default"])
    assert explicit[0].env[FORMAT_VARIABLE] == "json"


def test_a_json_line_has_the_fields_and_the_extras(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("service", "analytics", {"MULTI_DB_LOG_FORMAT": "json"}, out)
    log = logging.getLogger("multidb.test")
    with structlog.contextvars.bound_contextvars(request_id="r-1"):
        log.info("did %s", "it", extra={"rows": 3, "odd": object()})
    log.debug("not at INFO")
    line = json.loads(out.getvalue())
    assert list(line)[:7] == [
        "timestamp",
        "level",
        "logger",
        "process",
        "role",
        "request_id",
        "event",
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"])
    assert (line["level"], line["logger"], line["event"]) == ("info", "multidb.test", "did it")
    assert (line["process"], line["role"], line["request_id"]) == ("service", "analytics", "r-1")
    assert line["rows"] == 3
    assert line["odd"].startswith("<object")


def test_an_exception_is_logged_as_its_type_and_frames_only(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("gateway", None, {"MULTI_DB_LOG_FORMAT": "json"}, out)
    try:
        raise ConnectionError("password=hunter2 host=db")
    except ConnectionError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    line = json.loads(out.getvalue())
    assert "hunter2" not in out.getvalue()
    assert line["exception"].startswith("ConnectionError at unit/test_logs.py:")
    assert "role" not in line


def test_execute_line_outcomes(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("service", "default", {"MULTI_DB_LOG_FORMAT": "json"}, out)
    log = logging.getLogger("multidb.service.execute")
    with execute_line(log, principal="p") as line:
        line["rows"] = 2
    with pytest.raises(TimeoutError), execute_line(log):
        raise TimeoutError
    ok, failed = (json.loads(text) for text in out.getvalue().splitlines())
    assert (ok["outcome"], ok["status_code"], ok["rows"], ok["principal"]) == ("ok", 200, 2, "p")
    assert (failed["outcome"], failed["status_code"], failed["level"]) == (
        "TimeoutError",
        500,
        "warning",
    )


def test_the_human_format(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("service", "default", {"MULTI_DB_LOG_FORMAT": "human"}, out)
    logging.getLogger("multidb.test").warning("slow", extra={"ms": 12})
    text = out.getvalue()
    assert re.match(r"^\S+Z \[warning\s*\] slow\s+\[default multidb.test\] ms=12$", text.strip())


def test_example_env_shows_the_defaults() -> None:
    text = EXAMPLE_ENV.read_text()
    values = {}
    for variable in LOG_VARIABLES:
        match = re.search(rf"^# {variable}=(.*)$", text, re.MULTILINE)
        assert match, f"{variable} is not in the example env"
        values[variable] = match.group(1)
    assert load_log_settings(values) == LogSettings()
