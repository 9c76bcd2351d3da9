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
        pending = [m for m in store.manifests() if m.last_drill and not m.last_drill.recorded]
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
        body = msgspec.json.encode([self._record(m) for m in batch])
        try:
            await asyncio.to_thread(self._post, body)
        except (OSError, urllib.error.URLError) as exc:
            self.last_error = f"the logging service did not take drill results: {_reason(exc)}"
            log.warning("role %s: %s", self.role, self.last_error)
            return 0
        self.last_error = None
        for manifest in batch:
            assert manifest.last_drill is not None  # noqa: S101 - filtered above
            manifest.last_drill.recorded = True
            store.save(manifest)
        return len(batch)

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
