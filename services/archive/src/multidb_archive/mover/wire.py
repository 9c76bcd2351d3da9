"""What the mover's callers send and get back (HTTP, CLI, /stats)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

RunKind = Literal["archive", "unarchive"]
RunState = Literal["running", "done", "failed", "stopped"]
Trigger = Literal["schedule", "http", "cli"]


class RunRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``models``: which models (default: every model with a policy, for archive; every
    model, for unarchive); ``ids``: only these rows, by model (``{"Media": [1, 2]}``),
    whatever the policy says."""

    kind: RunKind = "archive"
    dry_run: bool = False
    models: list[str] | None = None
    ids: dict[str, list[int]] | None = None


class ModelReport(msgspec.Struct, kw_only=True):
    """``rows``/``bytes``: moved (or, in a dry run, that would move); ``held_back``: rows
    the policy chose that stay, by reason; ``changed``: rows left in place because they
    changed while their batch moved (they are looked at again next run)."""

    rows: int = 0
    bytes: int = 0
    batches: int = 0
    held_back: dict[str, int] = msgspec.field(default_factory=dict)
    changed: int = 0


class RunReport(msgspec.Struct, kw_only=True):
    id: str
    kind: RunKind
    dry_run: bool
    trigger: Trigger
    state: RunState
    started_at: datetime
    finished_at: datetime | None = None
    message: str | None = None
    requested_by: str | None = None
    models: dict[str, ModelReport] = msgspec.field(default_factory=dict)


class ArchiveStatus(msgspec.Struct, kw_only=True):
    """``running``: the id of the run in progress; ``archived``: rows in the archive per
    model; ``pending_batches``: ledger entries a dead run left open (the next run closes
    them); ``policy``: model -> rule, as configured."""

    schedule: str
    policy: dict[str, str]
    running: str | None = None
    last_run: RunReport | None = None
    archived: dict[str, int] = msgspec.field(default_factory=dict)
    pending_batches: int = 0
