"""What each Docker image holds, and how big it is, without a Docker engine: docs/images.md.

    uv run python bench/image_contents.py            # writes docs/images.md
    uv run python bench/image_contents.py --stdout   # prints it instead

For every build target of the Dockerfile (one per role, one for the gateway) the build
stages are replayed (tests/dockerfile.py: the same COPY and ``uv sync`` steps, offline from
uv's cache, bytecode compiled as in the image) into a temporary virtualenv; the packages are
read from its metadata and the size is the sum of its files. An image is that virtualenv on
top of ``python:3.11-slim`` (and, for a role, the PostgreSQL client), whose size is not
measured here (no engine): BASE_MB and PG_CLIENT_MB are the figures to replace with
``docker image ls`` where an engine runs.

For comparison, the same measure of the one image every process ran before the roles were
split (BEFORE, the commit where the shared library still depended on pgserver).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.dockerfile import ROOT, installed_distributions, lineage, replay, stages, targets

OUTPUT = ROOT / "docs" / "images.md"
BASE_IMAGE = "python:3.11-slim"
BASE_MB = 130  # uncompressed, linux/amd64, approximately: replace with a measured figure
# What a role image adds besides /app/.venv: pg_dump/pg_restore (stage role-runtime's
# postgresql-client-16 and what it pulls in, perl included, which the Debian packaging's
# scripts need, about 48 of these). An estimate from the packages' Installed-Size on
# bookworm, not measured: replace with `docker image ls` where an engine runs.
PG_CLIENT_MB = 60
PG_CLIENT_STAGE = "role-runtime"
BEFORE = "1cc7bb1"
MB = 1_000_000


def extra_mb(target: str) -> int:
    """What ``target``'s runtime adds to the base besides the virtualenv (estimated)."""
    holds_client = any(stage.name == PG_CLIENT_STAGE for stage in lineage(target, stages()))
    return PG_CLIENT_MB if holds_client else 0


def tree_size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def largest(venv: Path, count: int = 6) -> list[tuple[str, int]]:
    """The distributions that weigh most, by the files their RECORD lists (no bytecode)."""
    sizes = []
    for record in venv.glob("lib/python*/site-packages/*.dist-info/RECORD"):
        site = record.parent.parent
        size = 0
        for line in record.read_text().splitlines():
            relative = line.rsplit(",", 2)[0]
            path = site / relative
            if path.is_file():
                size += path.stat().st_size
        name = record.parent.name.split("-")[0].replace("_", "-").lower()
        sizes.append((name, size))
    return sorted(sizes, key=lambda item: -item[1])[:count]


def measure_target(target: str, folder: Path) -> tuple[dict[str, str], int, list[tuple[str, int]]]:
    staging = folder / target
    staging.mkdir()
    venv = staging / ".venv"
    replay(f"build-{target}", staging, venv, compile_bytecode=True)
    return installed_distributions(venv), tree_size(venv), largest(venv)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"image_contents: {name} is not on PATH")
    return path


def measure_before(folder: Path) -> tuple[dict[str, str], int, list[tuple[str, int]]]:
    """The one image of ``BEFORE``: its Dockerfile's ``uv sync --locked --no-dev``."""
    tree = folder / "before"
    tree.mkdir()
    archive = subprocess.run(
        [_tool("git"), "archive", BEFORE], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    venv = tree / ".venv"
    environment = {
        **{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_PYTHON": sys.executable,
        "UV_OFFLINE": "1",
        "UV_LINK_MODE": "copy",
        "UV_COMPILE_BYTECODE": "1",
    }
    subprocess.run(
        [_tool("uv"), "sync", "--locked", "--no-dev", "--no-editable"],
        cwd=tree,
        env=environment,
        capture_output=True,
        check=True,
    )
    return installed_distributions(venv), tree_size(venv), largest(venv)


def _megabytes(size: int) -> str:
    return f"{size / MB:.1f} MB"


def report(include_before: bool) -> str:
    with tempfile.TemporaryDirectory(prefix="multidb-images-") as temporary:
        folder = Path(temporary)
        measured = {target: measure_target(target, folder) for target in targets()}
        before = measure_before(folder) if include_before else None

    everywhere = set.intersection(*(set(packages) for packages, _, _ in measured.values()))
    some = next(iter(measured.values()))[0]
    lines = [
        "# What each image holds",
        "",
        "Made by `uv run python bench/image_contents.py` (re-run it after a dependency or",
        "Dockerfile change). No Docker engine runs on the dev machines: each target's build",
        "stages are replayed without one (`tests/dockerfile.py`: the same `COPY` and",
        "`uv sync` steps, offline from uv's cache, bytecode compiled as in the image), and the",
        "virtualenv they make, which is all a target adds to its runtime stage, is measured.",
        f"The base, `{BASE_IMAGE}`, is about {BASE_MB} MB uncompressed (an estimate, not",
        "measured here: `docker image ls` gives the figure where an engine runs). A role's",
        f"image adds pg_dump/pg_restore 16 for its backups (stage `{PG_CLIENT_STAGE}`:",
        "`postgresql-client-16` from the PostgreSQL apt repository), about",
        f"{PG_CLIENT_MB} MB, also an estimate (the packages' installed sizes; perl, which",
        "Debian's PostgreSQL packaging needs, is most of it); the gateway's does not.",
        "",
        "| target | runs | distributions | /app/.venv | image, estimated |",
        "|---|---|---|---|---|",
    ]
    commands = {name: stage.first("CMD") for name, stage in stages().items()}
    for target, (packages, size, _) in measured.items():
        command = (commands[target] or "").strip("[]").replace('"', "").replace(",", "")
        lines.append(
            f"| `{target}` | `{command}` | {len(packages)} | {_megabytes(size)} "
            f"| {BASE_MB + extra_mb(target) + size / MB:.0f} MB |"
        )
    lines += [
        "",
        "A role's image also runs its migration step: `multidb migrate <role>` (the same",
        "virtualenv). No image holds `multidb-devstack`, `pgserver` or the dev tools; a role's",
        "image holds no other role; the gateway's holds the role packages (role discovery",
        "through their entry points; they depend on nothing but the shared library).",
        "",
        f"## In every image ({len(everywhere)})",
        "",
        "The shared library (`multidb`) and its dependencies:",
        "",
        ", ".join(f"`{name}=={some[name]}`" for name in sorted(everywhere)),
        "",
        "## Each image's own",
        "",
    ]
    for target, (packages, _, _) in measured.items():
        own = sorted(set(packages) - everywhere)
        listed = ", ".join(f"`{name}=={packages[name]}`" for name in own)
        lines.append(f"- `{target}`: {listed or 'nothing else'}")
    heaviest = next(iter(measured.values()))[2]
    lines += [
        "",
        "The heaviest, in every image (installed files, without bytecode): "
        + ", ".join(f"{name} {_megabytes(size)}" for name, size in heaviest)
        + ".",
    ]
    if before is not None:
        packages, size, heaviest = before
        now = set().union(*(set(p) for p, _, _ in measured.values()))
        gone = sorted(set(packages) - now)
        lines += [
            "",
            f"## Before: the one image of `{BEFORE}`",
            "",
            "Every process ran one image with every role and the shared library, which then",
            f"depended on `pgserver`: {len(packages)} distributions, /app/.venv "
            f"{_megabytes(size)} (image about {BASE_MB + size / MB:.0f} MB). In no image now: "
            + ", ".join(f"`{name}=={packages[name]}`" for name in gone)
            + ". Heaviest then: "
            + ", ".join(f"{name} {_megabytes(s)}" for name, s in heaviest[:4])
            + ".",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdout", action="store_true", help="print instead of writing")
    parser.add_argument("--no-before", action="store_true", help=f"skip {BEFORE}'s image")
    args = parser.parse_args(argv)
    text = report(include_before=not args.no_before)
    if args.stdout:
        print(text, end="")
    else:
        OUTPUT.parent.mkdir(exist_ok=True)
        OUTPUT.write_text(text)
        print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
