"""The SQL that reads a moving row whole (the row, what moves with it, the links to it)
and the checksum both databases compute over it.

The checksum is md5 over the canonical text of three ``jsonb`` values, so the default
database (building them) and the archive database (storing them) compute the same one:
``jsonb`` text is canonical whatever the client sends. Every mover session sets
``TimeZone`` to UTC, so timestamps read the same in every run.
"""

from __future__ import annotations

from multidb_archive.mover.keys import ModelKeys, quote

CHECKSUM = "md5(data::text || dependents::text || links::text)"
# What an unarchive can check once the row is back: links may rightly point elsewhere now.
CONTENT_CHECKSUM = "md5(data::text || dependents::text)"


def _object(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return "'{}'::jsonb"
    inner = ", ".join(f"'{key.replace(chr(39), chr(39) * 2)}', {value}" for key, value in pairs)
    return f"jsonb_build_object({inner})"


def record_sql(plan: ModelKeys) -> str:
    """``$1``: ids. Rows: id, data, dependents, links, checksum, size, then the archive
    columns (``c_<name>``), ordered by id."""
    dependents = [
        (
            path.table,
            f"COALESCE((SELECT jsonb_agg(to_jsonb(d) ORDER BY to_jsonb(d)::text) "
            f"FROM {path.rows_sql('d')}), '[]'::jsonb)",
        )
        for path in plan.dependents
    ]
    links = [
        (
            f"{path.table}.{path.steps[-1].column}",
            f"COALESCE((SELECT jsonb_agg(jsonb_build_array(l.id, l.{quote(path.steps[-1].column)}) "
            f"ORDER BY l.id) FROM {path.rows_sql('l')}), '[]'::jsonb)",
        )
        for path in plan.links
    ]
    columns = "".join(
        f", ({expression})::text AS {quote('c_' + name)}"
        for name, expression in plan.entry.columns.items()
    )
    # OFFSET 0 keeps each lateral from being pulled up into the select list, where every
    # reference to it would build the jsonb (and run the dependents' subqueries) again.
    return f"""
SELECT r.id, txt.data, txt.dependents, txt.links,
       md5(txt.data || txt.dependents || txt.links) AS checksum,
       octet_length(txt.data || txt.dependents) AS size, {version_sql(plan)} AS version{columns}
FROM {quote(plan.entry.source_table)} r
CROSS JOIN LATERAL (
    SELECT to_jsonb(r) AS data, {_object(dependents)} AS dependents, {_object(links)} AS links
    OFFSET 0
) rec
CROSS JOIN LATERAL (
    SELECT rec.data::text AS data, rec.dependents::text AS dependents, rec.links::text AS links
    OFFSET 0
) txt
WHERE r.id = ANY($1::bigint[])
ORDER BY r.id
"""


def version_sql(plan: ModelKeys) -> str:
    """An expression over ``r`` that changes whenever the row, one of its dependents or
    one of its links changes, appears or goes: every tuple's ``xmin`` and place. An update
    writes a new tuple (a new xmin), so equal versions mean nothing was written since;
    a rewrite (VACUUM FULL) only moves tuples, and makes a row look changed: it then
    stays for the next run, the safe way round."""
    parts = ["r.xmin::text"]
    for alias, path in [("d", p) for p in plan.dependents] + [("l", p) for p in plan.links]:
        parts.append(
            f"coalesce((SELECT string_agg({alias}.xmin::text || '@' || {alias}.ctid::text, ',' "
            f"ORDER BY {alias}.ctid) FROM {path.rows_sql(alias)}), '')"
        )
    joined = " || '|' || ".join(parts)
    return f"md5({joined})"


def held_sql(plan: ModelKeys) -> str:
    """True when a row (``r``) is held back by any of the plan's holds."""
    if not plan.holds:
        return "false"
    return " OR ".join(f"EXISTS (SELECT 1 FROM {path.rows_sql('h')})" for path in plan.holds)


def hold_reason(plan: ModelKeys, index: int) -> str:
    step = plan.holds[index].steps[-1]
    return f"referenced by {step.referencing}.{step.column}"
