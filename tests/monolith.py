"""A monolith: the original application's tables, all in one database, with generated rows.

Each built-in role's migrations run to their first revision (``0001``: the tables as the
spec lists them, none partitioned yet) into the same database (each role keeps its own
version table), then every table is filled by SQL, ids ``first..last``, timestamps rising
with the id from ``start`` by ``step``, foreign keys consistent (row ``i`` of a table
refers to row ``i`` of its parents). Used by ``tests/integration/test_split.py`` and
``bench/split_bench.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from multidb import migrations
from multidb.roles import RoleSpec
from multidb.settings import DatabaseSettings

ROLES = ("default", "analytics", "logging", "archive")

# Each statement fills one table with ids $1..$2; row i is stamped $3::timestamptz + (i - $1) * $4::interval.
FILL = {
    "users": """
    INSERT INTO users (id, username, email, phone, hashed_password, is_active,
                       email_verified_at, created_at, updated_at, deleted_at)
    SELECT i, 'user_' || i, 'user' || i || '@example.com',
           CASE WHEN i % 3 = 0 THEN NULL ELSE '+1' || lpad(i::text, 12, '0') END,
           '$argon2id$v=19$' || md5(i::text), i % 17 <> 0,
           CASE WHEN i % 2 = 0 THEN $3::timestamptz + (i - $1) * $4::interval END,
           $3::timestamptz + (i - $1) * $4::interval, $3::timestamptz + (i - $1) * $4::interval + interval '1 minute',
           CASE WHEN i % 50 = 0 THEN $3::timestamptz + (i - $1) * $4::interval + interval '1 hour' END
    FROM generate_series($1::int, $2::int) AS i
    """,
    "people": """
    INSERT INTO people (id, user_id, first_name, middle_name, last_name, date_of_birth,
                        gender, nationality, national_id_number, address, phone, email,
                        created_at, updated_at)
    SELECT i, i, 'First' || i, CASE WHEN i % 4 = 0 THEN 'Middle' END, 'Last' || (i % 997),
           date '1950-01-01' + (i % 20000)::int, (ARRAY['female', 'male', NULL])[1 + (i % 3)::int],
           'USA', 'N' || lpad(i::text, 10, '0'), i || ' Main Street, Springfield',
           '+2' || lpad(i::text, 12, '0'), 'person' || i || '@example.com',
           $3::timestamptz + (i - $1) * $4::interval, $3::timestamptz + (i - $1) * $4::interval
    FROM generate_series($1::int, $2::int) AS i
    """,
    "media": """
    INSERT INTO media (id, parent_id, uploaded_by, filename, original_name, mime_type,
                       size_bytes, path, checksum_sha256, metadata, created_at, updated_at)
    SELECT i, CASE WHEN i % 10 = 0 AND i > $1 THEN i - 1 END, i, 'scan_' || i || '.jpg',
           'IMG ' || i || '.JPG', 'image/jpeg', 1000 + i * 37 % 500000,
           'uploads/' || (i % 100) || '/scan_' || i || '.jpg', encode(sha256(i::text::bytea), 'hex'),
           jsonb_build_object('width', 1000 + (i % 3000)::int, 'height', 700 + i % 2000, 'dpi', 300),
           $3::timestamptz + (i - $1) * $4::interval, $3::timestamptz + (i - $1) * $4::interval
    FROM generate_series($1::int, $2::int) AS i
    """,
    "identity_documents": """
    INSERT INTO identity_documents (id, person_id, media_id, document_type, document_number,
                                    issuing_country, issue_date, expiry_date, extracted_data,
                                    status, created_at, updated_at)
    SELECT i, i, CASE WHEN i % 7 <> 0 THEN i END, 'passport', 'P' || lpad(i::text, 9, '0'),
           'USA', date '2015-01-01' + (i % 3000)::int, date '2025-01-01' + (i % 3000)::int,
           jsonb_build_object('name', 'First' || i, 'confidence', (i % 100) / 100.0),
           (ARRAY['pending', 'verified', 'rejected', 'expired'])[1 + (i % 4)::int],
           $3::timestamptz + (i - $1) * $4::interval, $3::timestamptz + (i - $1) * $4::interval
    FROM generate_series($1::int, $2::int) AS i
    """,
    "audit_logs": """
    INSERT INTO audit_logs (id, user_id, action, resource_type, resource_id, details,
                            ip_address, user_agent, created_at)
    SELECT i, CASE WHEN i % 5 <> 0 THEN i END, (ARRAY['login', 'upload', 'verify'])[1 + (i % 3)::int],
           'media', i::text, jsonb_build_object('seq', i),
           '10.0.' || (i % 256) || '.' || (i % 250 + 1), 'Mozilla/5.0 (test)', $3::timestamptz + (i - $1) * $4::interval
    FROM generate_series($1::int, $2::int) AS i
    """,
    "ocr_jobs": """
    INSERT INTO ocr_jobs (id, media_id, document_id, status, engine, input, output, error,
                          processing_time_ms, started_at, completed_at, created_at)
    SELECT i, i, CASE WHEN i % 7 <> 0 THEN i END,
           (ARRAY['queued', 'processing', 'completed', 'failed'])[1 + (i % 4)::int], 'tesseract',
           jsonb_build_object('lang', 'eng'),
           CASE WHEN i % 4 = 2 THEN jsonb_build_object('text', repeat('word ', i % 40)) END,
           CASE WHEN i % 4 = 3 THEN 'unreadable' END, i % 5000,
           $3::timestamptz + (i - $1) * $4::interval, $3::timestamptz + (i - $1) * $4::interval + interval '2 seconds', $3::timestamptz + (i - $1) * $4::interval
    FROM generate_series($1::int, $2::int) AS i
    """,
    "mediables": """
    INSERT INTO mediables (id, media_id, mediable_type, mediable_id, tag, "order")
    SELECT i, i, 'people', i, 'photo', i % 3
    FROM generate_series($1::int, $2::int) AS i
    """,
    "analytics_events": """
    INSERT INTO analytics_events (id, name, user_id, session_id, properties, occurred_at)
    SELECT i, (ARRAY['page_view', 'upload', 'ocr_done', 'login'])[1 + (i % 4)::int], i % 1000,
           md5(i::text), jsonb_build_object('path', '/p/' || i % 50, 'ms', i % 900),
           $3::timestamptz + (i - $1) * $4::interval
    FROM generate_series($1::int, $2::int) AS i
    """,
    "user_activities": """
    INSERT INTO user_activities (id, user_id, activity, resource, ip_address, user_agent,
                                 details, created_at)
    SELECT i, i % 1000, 'viewed', '/documents/' || i, '10.1.' || (i % 256) || '.9',
           'curl/8.0', jsonb_build_object('n', i), $3::timestamptz + (i - $1) * $4::interval
    FROM generate_series($1::int, $2::int) AS i
    """,
    "system_metrics": """
    INSERT INTO system_metrics (id, name, value, unit, labels, recorded_at)
    SELECT i, 'cpu', sin(i) * 100, '%', jsonb_build_object('host', 'h' || i % 4),
           $3::timestamptz + (i - $1) * $4::interval
    FROM generate_series($1::int, $2::int) AS i
    """,
    "application_logs": """
    INSERT INTO application_logs (id, level, logger, message, context, request_id, created_at)
    SELECT i, (ARRAY['DEBUG', 'INFO', 'WARNING', 'ERROR'])[1 + (i % 4)::int], 'app.module' || i % 9,
           'request handled in ' || i % 1000 || ' ms: ' || md5(i::text),
           jsonb_build_object('i', i), md5((i * 7)::text), $3::timestamptz + (i - $1) * $4::interval
    FROM generate_series($1::int, $2::int) AS i
    """,
    "error_logs": """
    INSERT INTO error_logs (id, error_type, message, stack_trace, request_id, context,
                            resolved, created_at)
    SELECT i, 'ValueError', 'bad value ' || i, 'Traceback (most recent call last): ...' || i,
           md5(i::text), jsonb_build_object('i', i), i % 3 = 0, $3::timestamptz + (i - $1) * $4::interval
    FROM generate_series($1::int, $2::int) AS i
    """,
    "access_logs": """
    INSERT INTO access_logs (id, event_id, created_at, request_id, principal, auth_method,
                             method, path, target_role, query_fingerprint, query_preview,
                             read_only, outcome, status_code, row_count, duration_ms,
                             error, client_ip)
    SELECT i, md5('event' || i), $3::timestamptz + (i - $1) * $4::interval, md5(i::text), 'user' || i % 10,
           (ARRAY['jwt', 'api_key', 'anonymous'])[1 + (i % 3)::int], 'POST',
           '/database/default/execute', 'default', md5('q' || i % 20), 'SELECT 1',
           true, (ARRAY['allowed', 'refused', 'failed', 'rejected'])[1 + (i % 4)::int], 200, 1,
           (i % 1000) / 7.0, NULL, '127.0.0.1'
    FROM generate_series($1::int, $2::int) AS i
    """,
    "archived_media": """
    INSERT INTO archived_media (id, original_id, filename, mime_type, archived_at,
                                archived_by, reason, data)
    SELECT i, i, 'old_' || i || '.png', 'image/png', $3::timestamptz + (i - $1) * $4::interval, 'admin',
           'retention', jsonb_build_object('id', i, 'filename', 'old_' || i || '.png')
    FROM generate_series($1::int, $2::int) AS i
    """,
    "archived_people": """
    INSERT INTO archived_people (id, original_id, full_name, national_id_number, archived_at,
                                 archived_by, reason, data)
    SELECT i, i, 'Old Person ' || i, 'X' || i, $3::timestamptz + (i - $1) * $4::interval, 'admin', 'retention',
           jsonb_build_object('id', i)
    FROM generate_series($1::int, $2::int) AS i
    """,
    "archived_users": """
    INSERT INTO archived_users (id, original_id, username, email, archived_at, archived_by,
                                reason, data)
    SELECT i, i, 'old_user_' || i, 'old' || i || '@example.com', $3::timestamptz + (i - $1) * $4::interval, 'admin',
           'retention', jsonb_build_object('id', i)
    FROM generate_series($1::int, $2::int) AS i
    """,
}


def create_tables(database: DatabaseSettings, roles: Mapping[str, RoleSpec]) -> None:
    """Every built-in role's first revision, into ``database``."""
    for name in ROLES:
        migrations.upgrade(roles[name], "0001", database)


async def fill(
    database: DatabaseSettings, first: int, last: int, start: datetime, step: timedelta
) -> None:
    """Rows ``first..last`` of every table (one transaction per table)."""
    conn = await database.connect()
    try:
        for sql in FILL.values():
            arguments = (first, last, start, step) if "$3" in sql else (first, last)
            await conn.execute(sql, *arguments)
        # Sequences past the rows, as an application inserting them would have left them.
        for table in FILL:
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
