"""``:name`` parameters → PostgreSQL's ``$n``, outside literals, identifiers and comments.

SQLAlchemy's ``text()`` would bind ``:30`` inside ``'10:30'`` and cannot read ``:id::int``
(a parameter followed by a cast), both everyday PostgreSQL; so this scanner skips
quoted strings, quoted identifiers, dollar-quoted bodies and comments, and accepts a
cast right after a parameter. A name used twice gets one ``$n``.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r"""
      (?P<skip>
          '(?:[^']|'')*'?                       # string literal ('' escapes a quote)
        | "(?:[^"]|"")*"?                       # quoted identifier
        | --[^\n]*                              # line comment
        | /\*.*?(?:\*/|\Z)                      # block comment
        | (?P<dollar>\$[A-Za-z_]*\$).*?(?:(?P=dollar)|\Z)  # dollar-quoted body
        | ::                                    # a cast, not a parameter
      )
    | (?<![\w:]):(?P<name>[A-Za-z_]\w*)         # a parameter
    """,
    re.VERBOSE | re.DOTALL,
)


def to_positional(query: str) -> tuple[str, list[str]]:
    """``SELECT :a, :b, :a`` → (``SELECT $1, $2, $1``, ["a", "b"])."""
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name is None:
            return match.group(0)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _TOKEN.sub(replace, query), names
