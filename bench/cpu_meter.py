"""Where a bench's CPU went: seconds (user + system) per part, read from the kernel."""

from __future__ import annotations

from collections.abc import Callable

import psutil

OTHERS = "others"


class CpuMeter:
    """CPU seconds spent by the bench's processes, grouped by part (``client``: this one).

    With ``machine``, :meth:`read` also says what the machine's cores did besides, as
    ``others``: work sharing the machine (another bench, a test run) slows ours down."""

    def __init__(
        self, parts: dict[str, Callable[[], list[psutil.Process]]], *, machine: bool = False
    ) -> None:
        me = psutil.Process()
        self.parts: dict[str, Callable[[], list[psutil.Process]]] = {
            **parts,
            "client": lambda: [me],
        }
        self.machine = machine

    def read(self) -> dict[str, float]:
        spent = {}
        for part, processes in self.parts.items():
            total = 0.0
            for process in processes():
                try:
                    times = process.cpu_times()
                except psutil.Error:
                    continue  # a PostgreSQL backend that ended between two readings
                total += times.user + times.system
            spent[part] = total
        if self.machine:
            cores = psutil.cpu_times()
            busy = sum(cores) - cores.idle - getattr(cores, "iowait", 0.0)
            spent[OTHERS] = busy - sum(spent.values())
        return spent
