"""Fairness: how many statements one caller may run at once on a role service.

Beyond the limit a caller is told at once to come back (429 with ``Retry-After``) instead
of queueing in front of everyone else for the pool's connections.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from multidb.errors import TooManyRequestsError


class CallerLimit:
    """At most ``per_caller`` statements in flight per caller (the principal's subject)."""

    def __init__(self, per_caller: int, retry_after_s: int) -> None:
        self.per_caller = per_caller
        self._retry_after = str(retry_after_s)
        self._running: Counter[str] = Counter()

    @contextlib.contextmanager
    def slot(self, caller: str) -> Iterator[None]:
        """Hold one of ``caller``'s slots; raise :class:`TooManyRequestsError` when none is free."""
        if self._running[caller] >= self.per_caller:
            msg = (
                f"{self.per_caller} statements of this caller are already running on this "
                "database; retry when one has finished"
            )
            raise TooManyRequestsError(msg, headers={"Retry-After": self._retry_after})
        self._running[caller] += 1
        try:
            yield
        finally:
            self._running[caller] -= 1
            if not self._running[caller]:
                del self._running[caller]
