"""The Dockerfile as data, and its build stages replayed without Docker.

No Docker engine runs on the dev machines. :func:`replay` does what a build target's
builder stages do, in a staging folder: it copies from the build context exactly what their
``COPY`` instructions copy and runs their ``uv sync`` commands (offline, from uv's cache),
so a target that lacks a source it installs, or installs more than it should, shows here.
Used by tests/unit/test_deployment.py, the single-role install test and
bench/image_contents.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
WORKDIR = "/app"


@dataclass
class Stage:
    base: str  # the FROM image or stage
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def runs(self) -> list[str]:
        return [args for kind, args in self.instructions if kind == "RUN"]

    def copies(self) -> list[str]:
        return [args for kind, args in self.instructions if kind == "COPY"]

    def first(self, kind: str) -> str | None:
        return next((args for k, args in self.instructions if k == kind), None)


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        found.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return found


def stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """Every stage by name, in file order (``FROM <base> AS <name>``; names required)."""
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for kind, args in instructions(path):
        if kind == "FROM":
            match = re.fullmatch(r"(\S+) AS (\S+)", args, flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            current = Stage(base=match.group(1), name=match.group(2))
            found[current.name] = current
        elif current is not None:
            current.instructions.append((kind, args))
    return found


def lineage(name: str, every: dict[str, Stage]) -> list[Stage]:
    """``name``'s stage and the stages it is built FROM, the oldest first."""
    chain = [every[name]]
    while chain[0].base in every:
        chain.insert(0, every[chain[0].base])
    return chain


def targets(every: dict[str, Stage] | None = None) -> list[str]:
    """The images, in file order: every stage with a ``build-<name>`` stage (whose
    virtualenv it copies), whichever runtime it is built on."""
    found = stages() if every is None else every
    return [name for name in found if f"build-{name}" in found]


def copied_from(stage: Stage) -> list[str]:
    """The stages a stage copies from (``COPY --from=<stage>``)."""
    return re.findall(r"--from=(\S+)", " ".join(stage.copies()))


def uv_sync_packages(command: str) -> list[str]:
    """The ``--package`` arguments of a ``uv sync`` command."""
    words = shlex.split(command)
    return [words[i + 1] for i, word in enumerate(words) if word == "--package"]


def _uv_command(run: str) -> list[str] | None:
    words = shlex.split(run)
    words = [word for word in words if not word.startswith("--mount=")]
    if words[:2] != ["uv", "sync"]:
        return None
    return words


def replay(
    build_stage: str, staging: Path, venv: Path, *, compile_bytecode: bool = False
) -> list[list[str]]:
    """Do what ``build_stage`` (and the stages below it) do, without Docker; return the
    ``uv sync`` commands run.

    The build context is this checkout; ``/app`` is ``staging``; the virtualenv the
    Dockerfile makes at ``/app/.venv`` is ``venv``; uv runs offline from its cache, with
    this machine's Python 3.11 in place of the base image's.
    """
    environment = {
        **os.environ,
        "UV_OFFLINE": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_LINK_MODE": "copy",
    }
    for name in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "UV_PYTHON"):
        environment.pop(name, None)
    ran: list[list[str]] = []
    for stage in lineage(build_stage, stages()):
        for kind, args in stage.instructions:
            if kind == "WORKDIR":
                assert args == WORKDIR, args
            elif kind == "ENV":
                for assignment in shlex.split(args):
                    key, _, value = assignment.partition("=")
                    environment[key] = value
            elif kind == "COPY" and not args.startswith("--from="):
                *sources, target = args.split()
                for source in sources:
                    _copy(ROOT / source, staging / target, directory_target=target.endswith("/"))
            elif kind == "RUN":
                command = _uv_command(args)
                assert command is not None, f"a build stage runs uv sync only: {args}"
                environment.update(
                    UV_PROJECT_ENVIRONMENT=str(venv),
                    UV_PYTHON=sys.executable,
                    UV_COMPILE_BYTECODE="1" if compile_bytecode else "0",
                )
                result = subprocess.run(
                    command,
                    cwd=staging,
                    env=environment,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if result.returncode != 0:
                    msg = f"{shlex.join(command)} failed in {build_stage}:\n{result.stderr}"
                    raise RuntimeError(msg)
                ran.append(command)
    return ran


def _copy(source: Path, target: Path, *, directory_target: bool) -> None:
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
        return
    destination = target / source.name if directory_target or target.is_dir() else target
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, destination)


def installed_distributions(venv: Path) -> dict[str, str]:
    """Normalised distribution name -> version, read from the virtualenv's metadata."""
    found: dict[str, str] = {}
    for metadata in venv.glob("lib/python*/site-packages/*.dist-info/METADATA"):
        fields = dict(
            line.split(": ", 1)
            for line in metadata.read_text(errors="replace").splitlines()
            if line.startswith(("Name: ", "Version: "))
        )
        found[re.sub(r"[-_.]+", "-", fields["Name"]).lower()] = fields["Version"]
    return found


def _project_name(member: Path) -> str:
    name: str = tomllib.loads((member / "pyproject.toml").read_text())["project"]["name"]
    return name


def locked_distributions(*packages: str, root: Path = ROOT) -> dict[str, str]:
    """What an install of ``packages`` gets on Linux, from the lock (``uv export``):
    normalised distribution name -> version (``workspace`` for a workspace member)."""
    uv = shutil.which("uv")
    assert uv, "uv is on PATH (make installs it)"
    selection = [word for name in packages for word in ("--package", name)]
    result = subprocess.run(
        [uv, "export", *selection, "--no-dev", "--frozen", "--no-hashes", "--no-annotate"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    found = {}
    for line in result.stdout.splitlines():
        if not line or line.startswith("#") or "sys_platform == 'win32'" in line:
            continue
        requirement = line.removeprefix("-e ").split(";")[0].strip()
        if requirement.startswith("./"):  # a workspace member, by its folder
            found[_project_name(root / requirement)] = "workspace"
            continue
        name, _, version = requirement.partition("==")
        found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found
