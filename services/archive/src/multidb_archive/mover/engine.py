"""The mover (skeleton: the lead fills the batches in; the public API is fixed)."""

from __future__ import annotations

from collections.abc import Callable

from multidb.settings import DatabaseSettings
from multidb_archive.mover.settings import ArchiveSettings
from multidb_archive.mover.wire import ArchiveStatus, RunReport, RunRequest

Progress = Callable[[str, int], None]


class Mover:
    def __init__(
        self, source: DatabaseSettings | None, archive: DatabaseSettings, settings: ArchiveSettings
    ) -> None:
        self.source = source
        self.archive = archive
        self.settings = settings

    async def start(
        self, request: RunRequest, *, trigger: str, requested_by: str | None = None
    ) -> RunReport:
        raise NotImplementedError

    async def run(
        self,
        request: RunRequest,
        *,
        trigger: str,
        requested_by: str | None = None,
        progress: Progress | None = None,
    ) -> RunReport:
        raise NotImplementedError

    async def wait(self, run_id: str) -> RunReport:
        raise NotImplementedError

    async def get_run(self, run_id: str) -> RunReport | None:
        raise NotImplementedError

    async def runs(self, limit: int = 20) -> list[RunReport]:
        raise NotImplementedError

    async def status(self) -> ArchiveStatus:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError
