"""What a single role's install resolves to, from the lock: never the development stack.

``uv export --package <role> --no-dev --frozen`` lists what
``uv sync --package <role> --no-dev`` installs (the Dockerfile's role targets); the
install itself is replayed, and compared with this list, in
tests/integration/test_single_role_install.py.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.dockerfile import locked_distributions

ROOT = Path(__file__).resolve().parents[2]
# The development stack and what only it needs; a TLS-generating library has no place in a
# service either (the CA and certificates are made by the development stack).
NEVER_IN_A_SERVICE = {"pgserver", "multidb-devstack", "psutil", "fasteners", "cryptography"}


def _members() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = {}
    for pattern in config["tool"]["uv"]["workspace"]["members"]:
        for member in sorted(ROOT.glob(pattern)):
            if (member / "pyproject.toml").is_file():
                project = tomllib.loads((member / "pyproject.toml").read_text())["project"]
                found[project["name"]] = project
    return found


MEMBERS = _members()
ROLE_PACKAGES = sorted(
    name for name, project in MEMBERS.items() if "multidb.roles" in project.get("entry-points", {})
)


def test_the_workspace_has_the_four_roles() -> None:
    assert ROLE_PACKAGES == [
        "multidb-analytics",
        "multidb-archive",
        "multidb-default",
        "multidb-logging",
    ]


@pytest.mark.parametrize("role_package", ROLE_PACKAGES)
def test_a_role_alone_resolves_to_itself_the_library_and_no_development_stack(
    role_package: str,
) -> None:
    names = set(locked_distributions(role_package))
    assert {role_package, "multidb"} <= names
    assert not names & NEVER_IN_A_SERVICE, names & NEVER_IN_A_SERVICE
    others = set(ROLE_PACKAGES) - {role_package}
    assert not names & (others | {"multidb-gateway"}), "no other role, no gateway"
    # The role adds nothing of its own beyond the shared library.
    assert names == set(locked_distributions("multidb")) | {role_package}


def test_the_gateway_resolves_to_itself_the_roles_and_no_development_stack() -> None:
    names = set(locked_distributions("multidb-gateway", *ROLE_PACKAGES))
    assert not names & NEVER_IN_A_SERVICE
    assert names >= {"multidb-gateway", "multidb", *ROLE_PACKAGES}


def test_the_development_stack_is_where_pgserver_is() -> None:
    # The check above is not vacuous: the development stack does pull the server in.
    assert {"pgserver", "multidb-devstack"} <= set(locked_distributions("multidb-devstack"))
