"""``multidb split``: from one database (the monolith) to one database per role.

- :mod:`~multidb.split.source`: the source URL, parsed and connected (never shown with its
  password), and the session settings both sides share;
- :mod:`~multidb.split.plan`: what maps where (each role's model tables), checked before
  anything changes: tables present, columns compatible, targets empty;
- :mod:`~multidb.split.copy`: COPY in keyset batches from one snapshot of the source,
  partitions created for the rows' days, sequences moved past the copied ids;
- :mod:`~multidb.split.verify`: row count and checksum of each table on both sides;
- :mod:`~multidb.split.run`: the whole job, its report;
- :mod:`~multidb.split.command`: the ``multidb split`` command.
"""

from multidb.split.errors import SplitError, SplitFailedError
from multidb.split.run import SplitOptions, SplitReport, TableReport, split

__all__ = ["SplitError", "SplitFailedError", "SplitOptions", "SplitReport", "TableReport", "split"]
