"""``:name`` parameters → PostgreSQL's ``$n``, outside literals, identifiers and comments.

SQLAlchemy's ``text()`` would bind ``:30`` inside ``'10:30'`` and cannot read ``:id::int``
(a parameter followed by a cast), both everyday PostgreSQL; so this scanner skips
quoted strings (``E'...'`` with its backslash escapes too), quoted identifiers,
dollar-quoted bodies and comments, and accepts a cast right after a parameter. A name
used twice gets one ``$n``.

The scan is one pass of one regular expression, linear in the query's length: the
event loop runs it for every execute, so nothing here may grow faster than the input.
"""

from __future__ import annotations

import re

from multidb.errors import BadRequestError

# PostgreSQL's wire protocol counts a statement's parameters in an Int16.
MAX_PARAMETERS = 65_535

_TOKEN = re.compile(
    r"""
      (?P<skip>
          (?<![\w$])[Ee]'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'?  # E'...': backslash escapes
        | '[^']*(?:''[^']*)*'?                    # string literal ('' escapes a quote)
        | "[^"]*(?:""[^"]*)*"?                    # quoted identifier
        | --[^\n]*                                # line comment
        | /\*.*?(?:\*/|\Z)                        # block comment
        | (?<![\w$])(?P<dollar>\$(?:[^\W\d]\w*)?\$).*?(?:(?P=dollar)|\Z)  # dollar-quoted
        | ::                                      # a cast, not a parameter
      )
    | (?<![\w$])(?P<junk>(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?[0-9A-Za-z_]*
        (?=[^\x00-\x7f]))                        # a number run into a non-ASCII letter
    | (?<![\w$])(?P<positional>\$\d+)             # $1: only named parameters are bound
    | (?<![\w:]):(?P<name>[^\W\d]\w*)             # a parameter
    """,
    re.VERBOSE | re.DOTALL,
)


def to_positional(query: str) -> tuple[str, list[str]]:
    """``SELECT :a, :b, :a`` → (``SELECT $1, $2, $1``, ["a", "b"]).

    Raise :class:`~multidb.errors.BadRequestError` for a positional ``$1`` (its value
    could not be named in ``params``) and for more distinct names than PostgreSQL takes.
    """
    numbers: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name is None:
            if match.group("junk") is not None:
                # PostgreSQL reports this with the letter's first byte only, and asyncpg
                # cannot decode that message: the connection would hang. Say it here.
                msg = (
                    f"a number runs straight into a non-ASCII character after "
                    f"{match.group('junk')!r}: put a space or an operator between them"
                )
                raise BadRequestError(msg)
            positional = match.group("positional")
            if positional is not None:
                msg = (
                    f"positional parameter {positional} is not supported: "
                    "name it (for example :id) and pass its value in params"
                )
                raise BadRequestError(msg)
            return match.group(0)
        number = numbers.get(name)
        if number is None:
            if len(numbers) >= MAX_PARAMETERS:
                msg = f"too many parameters: PostgreSQL takes at most {MAX_PARAMETERS}"
                raise BadRequestError(msg)
            number = numbers[name] = f"${len(numbers) + 1}"
        return number

    return _TOKEN.sub(replace, query), list(numbers)
