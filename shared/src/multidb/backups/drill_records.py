"""Drill results travel to the logging role's service, which stores each once.

Roles never import each other: a role service POSTs its drill results to the logging
service's ``/backups/drills`` with a short-lived token it mints (``db:admin``), the way the
gateway's audit trail reaches it. A result is marked ``recorded`` in its manifest once the
logging service took it; until then it is sent again at every tick of the role's backup
job (idempotent on ``drill_id``). Drills are rare, so the stdlib's client in a thread does.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from http import HTTPStatus

import msgspec

from multidb.auth import ADMIN, internal_signing_key, mint_token
from multidb.backups.store import BackupStore
from multidb.backups.wire import BackupManifest, DrillRecord
from multidb.settings import Settings

log = logging.getLogger("multidb.backups.drills")
SUBJECT = "multidb-backups"
TIMEOUT_S = 10.0
BATCH = 100


class DrillRecorder:
    def __init__(self, settings: Settings, role: str) -> None:
        self.url = settings.backups.logging_url
        self.role = role
        self._key = internal_signing_key(settings)
        self._said_off = False
        self.last_error: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.url and self._key and self.url.startswith(("http://", "https://")))

    async def send_pending(self, store: BackupStore) -> int:
        """Send every drill result not yet recorded; return how many were recorded now."""
        pending = [
            m
            for m in store.manifests()
            if m.last_drill and not m.last_drill.recorded and not m.last_drill.record_refused
        ]
        if not pending:
            return 0
        if not self.enabled:
            if not self._said_off:
                log.info(
                    "drill results of role %s stay in the manifests only: "
                    "MULTI_DB_LOGGING_SERVICE_URL and a service secret are not both set",
                    self.role,
                )
                self._said_off = True
            return 0
        batch = pending[:BATCH]
        try:
            await self._send(batch)
        except urllib.error.HTTPError as exc:
            if exc.code != HTTPStatus.BAD_REQUEST:
                return self._failed(exc)
            # The batch itself is refused: find the records at fault, one at a time, so
            # one bad record never holds the others back for ever.
            return await self._one_by_one(batch, store)
        except (OSError, urllib.error.URLError) as exc:
            return self._failed(exc)
        self.last_error = None
        for manifest in batch:
            self._mark(manifest, store, recorded=True)
        return len(batch)

    async def _send(self, batch: list[BackupManifest]) -> None:
        body = msgspec.json.encode([self._record(m) for m in batch])
        await asyncio.to_thread(self._post, body)

    def _failed(self, exc: BaseException) -> int:
        self.last_error = f"the logging service did not take drill results: {_reason(exc)}"
        log.warning("role %s: %s", self.role, self.last_error)
        return 0

    async def _one_by_one(self, batch: list[BackupManifest], store: BackupStore) -> int:
        sent = 0
        for manifest in batch:
            try:
                await self._send([manifest])
            except urllib.error.HTTPError as exc:
                if exc.code != HTTPStatus.BAD_REQUEST:
                    return sent + self._failed(exc)
                refused = f"the logging service refused it ({exc.code})"
                log.error("role %s: drill record of backup %s: %s", self.role, manifest.id, refused)
                self._mark(manifest, store, refused=refused)
                continue
            except (OSError, urllib.error.URLError) as exc:
                return sent + self._failed(exc)
            self._mark(manifest, store, recorded=True)
            sent += 1
        return sent

    @staticmethod
    def _mark(
        manifest: BackupManifest, store: BackupStore, *, recorded: bool = False, refused: str = ""
    ) -> None:
        assert manifest.last_drill is not None  # noqa: S101 - only drilled ones are sent
        manifest.last_drill.recorded = recorded
        manifest.last_drill.record_refused = refused or None
        store.save(manifest)

    def _record(self, manifest: BackupManifest) -> DrillRecord:
        drill = manifest.last_drill
        assert drill is not None  # noqa: S101 - filtered by the caller
        return DrillRecord(
            drill_id=drill.drill_id,
            role=manifest.role,
            backup_id=manifest.id,
            started_at=drill.started_at,
            finished_at=drill.finished_at,
            duration_s=drill.duration_s,
            passed=drill.passed,
            differences=[line[:1000] for line in drill.differences[:200]],
        )

    def _post(self, body: bytes) -> None:
        assert self._key is not None  # noqa: S101 - enabled
        kid, secret = self._key
        token = mint_token(secret, SUBJECT, [ADMIN], 300, kid=kid)
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked by enabled
            f"{self.url}/backups/drills",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:  # noqa: S310
            answer.read(4096)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"it answered {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot reach it: {exc.reason}"
    return f"cannot reach it: {type(exc).__name__}"
