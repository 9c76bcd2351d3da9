"""The one error of a split that is the caller's to fix."""

from __future__ import annotations


class SplitError(Exception):
    """Bad input found before anything changed (a source that does not parse or connect,
    missing tables, incompatible columns, targets not empty): one line, no secret."""
