"""The stack's pidfile lock (``.data/stack.pid``), raced by real processes.

Each contender is a Python process that waits for a start line on stdin, tries the lock,
says ``acquired`` or ``refused ...``, and holds what it got until its next line (or death).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from multidb_devstack.stack import AlreadyRunningError, StackLock

CONTENDER = """
import sys
from pathlib import Path
from multidb_devstack.stack import AlreadyRunningError, StackLock

lock = StackLock(Path(sys.argv[1]))
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "go":
        try:
            lock.acquire()
        except AlreadyRunningError as exc:
            print(f"refused {exc}", flush=True)
        else:
            print("acquired", flush=True)
    else:
        lock.release()
        print("released", flush=True)
"""
RACERS = 8
ROUNDS = 10


class Contender:
    def __init__(self, folder: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CONTENDER, str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.line() == "ready"

    def line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def say(self, text: str = "go") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()


@pytest.fixture
def contenders() -> Iterator[list[Contender]]:
    started: list[Contender] = []
    yield started
    for contender in started:
        if contender.process.poll() is None:
            contender.process.kill()
        contender.process.wait()


def test_of_racing_stacks_exactly_one_gets_the_lock(
    tmp_path: Path, contenders: list[Contender]
) -> None:
    racers = [Contender(tmp_path) for _ in range(RACERS)]
    contenders.extend(racers)
    for _ in range(ROUNDS):
        for racer in racers:  # every one is past its imports, waiting: now all at once
            racer.say()
        answers = [racer.line() for racer in racers]
        winners = [r for r, answer in zip(racers, answers, strict=True) if answer == "acquired"]
        assert len(winners) == 1, answers
        [winner] = winners
        assert (tmp_path / "stack.pid").read_text().strip() == f"{winner.process.pid}"
        for racer, answer in zip(racers, answers, strict=True):
            if racer is not winner:
                assert answer.startswith("refused the local stack is already running"), answer
        winner.say("stop")
        assert winner.line() == "released"
        assert not (tmp_path / "stack.pid").exists()


def test_a_killed_stack_leaves_a_stale_file_that_the_next_one_takes_over(
    tmp_path: Path, contenders: list[Contender]
) -> None:
    first, second = Contender(tmp_path), Contender(tmp_path)
    contenders += [first, second]
    first.say()
    assert first.line() == "acquired"
    second.say()
    assert second.line() == (
        f"refused the local stack is already running (pid {first.process.pid});"
        " stop it with Ctrl-C first"
    )
    first.process.send_signal(signal.SIGKILL)  # no release: the file stays, naming a dead pid
    first.process.wait()
    assert (tmp_path / "stack.pid").read_text().strip() == f"{first.process.pid}"
    second.say()
    assert second.line() == "acquired"
    assert (tmp_path / "stack.pid").read_text().strip() == f"{second.process.pid}"


def test_a_file_naming_a_live_unrelated_pid_does_not_block(tmp_path: Path) -> None:
    # A pid is reused after a reboot: the file's content never decides, the lock does.
    (tmp_path / "stack.pid").write_text(f"{os.getppid()}\n")
    lock = StackLock(tmp_path)
    lock.acquire()
    try:
        assert (tmp_path / "stack.pid").read_text().strip() == f"{os.getpid()}"
        with pytest.raises(AlreadyRunningError, match=rf"already running \(pid {os.getpid()}\)"):
            StackLock(tmp_path).acquire()  # another open file description: refused too
    finally:
        lock.release()
    assert not (tmp_path / "stack.pid").exists()
    StackLock(tmp_path).acquire()  # free again
