"""The two errors of a split: one before anything changed, one after."""

from __future__ import annotations


class SplitError(Exception):
    """Bad input found before anything changed (a source that does not parse or connect,
    missing tables, incompatible columns, targets not empty): one line, no secret; exit
    code 2."""


class SplitFailedError(Exception):
    """A failure once the split began changing the targets (from their migrations on):
    one line, no secret, saying what to do; exit code 1. The source is left as it is."""
