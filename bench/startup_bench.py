"""``make bench`` part 2: seconds from ``make run`` on a fresh clone to ready.

First run (new .venv from the uv cache, initdb, migrations) and second run (``.data/``
and ``.venv`` kept), both in a clone in a temporary folder, stopped with Ctrl-C.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.clone_stack import ClonedStack, clone


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="multidb-startup-") as folder:
        repository = clone(Path(folder))
        times = []
        for _ in range(2):
            stack = ClonedStack(repository)
            times.append(stack.start())
            stack.stop()
            leftovers = stack.leftovers()
            if leftovers:
                print("processes left behind:", *leftovers, sep="\n  ")
                return 1
    print("\nmultidb bench: make run on a fresh clone, until it prints that it is ready\n")
    print(f"  first run  (new .venv, initdb, migrations)   {times[0]:6.1f} s")
    print(f"  second run (.data and .venv kept)             {times[1]:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
