"""The archive role's mover: rows of the default database's archivable tables move to the
archive database in verified batches, with a ledger so that a crash at any point loses
nothing and duplicates nothing; and back again (unarchive).

See :mod:`multidb_archive.mover.batches` for the protocol and why it is safe.
"""

from multidb_archive.mover.engine import Mover
from multidb_archive.mover.errors import MoverBusyError, MoverError
from multidb_archive.mover.settings import ArchiveSettings, Policy, load_archive_settings
from multidb_archive.mover.wire import ArchiveStatus, ModelReport, RunReport, RunRequest

__all__ = [
    "ArchiveSettings",
    "ArchiveStatus",
    "ModelReport",
    "Mover",
    "MoverBusyError",
    "MoverError",
    "Policy",
    "RunReport",
    "RunRequest",
    "load_archive_settings",
]
