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
    return f"""
SELECT r.id, rec.data::text AS data, rec.dependents::text AS dependents,
       rec.links::text AS links, md5(rec.data::text || rec.dependents::text || rec.links::text)
       AS checksum, octet_length(rec.data::text || rec.dependents::text) AS size{columns}
FROM {quote(plan.entry.source_table)} r
CROSS JOIN LATERAL (
    SELECT to_jsonb(r) AS data, {_object(dependents)} AS dependents, {_object(links)} AS links
) rec
WHERE r.id = ANY($1::bigint[])
ORDER BY r.id
"""


def held_sql(plan: ModelKeys) -> str:
    """True when a row (``r``) is held back by any of the plan's holds."""
    if not plan.holds:
        return "false"
    return " OR ".join(f"EXISTS (SELECT 1 FROM {path.rows_sql('h')})" for path in plan.holds)


def hold_reason(plan: ModelKeys, index: int) -> str:
    step = plan.holds[index].steps[-1]
    return f"referenced by {step.referencing}.{step.column}"
