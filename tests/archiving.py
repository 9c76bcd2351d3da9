"""Two fresh databases for the archive mover's tests (a default and an archive, migrated to
head on the suite's server), and realistic rows to move: users, their people and media,
with the rows that hang off them (documents, OCR jobs, media links, audit entries)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg

from multidb import migrations
from multidb.plugins import get_roles
from multidb.settings import DatabaseSettings, Settings, load_settings
from multidb_archive.mover.keys import quote
from multidb_archive.mover.login import derive_login

# Rows older than every default policy (Media: untouched 365d, People/User: deleted 30d).
OLD = "now() - interval '400 days'"


async def _admin(settings: Settings, role: str = "default") -> asyncpg.Connection:
    return await settings.databases[role].connect(database="postgres", timeout=10)


@asynccontextmanager
async def mover_databases(
    database_env: dict[str, str], servers: Mapping[str, str] | None = None, **env: str
) -> AsyncIterator[tuple[dict[str, str], Settings]]:
    """``(env, settings)`` whose default and archive roles point at two new databases.

    ``servers``: variables that put a role on another server (``spare_cluster.environment``);
    each database is made on its role's server. One on a server that is down at the end (a
    throw-away cluster a test stopped) is left there. At the end the databases go, and so
    does the login the mover made for the default one (``<database>_archiver``)."""
    suffix = secrets.token_hex(4)
    names = {"default": f"mover_default_{suffix}", "archive": f"mover_archive_{suffix}"}
    full = {
        **database_env,
        **(servers or {}),
        "DB_NAME": names["default"],
        "MULTI_DB_ARCHIVE_DATABASE": names["archive"],
        "MULTI_DB_ARCHIVE_INTERVAL": "off",
        **env,
    }
    roles = get_roles()
    settings = load_settings(full, roles)
    made: list[str] = []
    try:
        for role, name in names.items():
            admin = await _admin(settings, role)
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()
            made.append(role)
            await asyncio.to_thread(
                migrations.upgrade, roles[role], "head", settings.databases[role]
            )
        yield full, settings
    finally:
        for role in made:
            try:
                admin = await _admin(settings, role)
            except (OSError, TimeoutError, asyncpg.PostgresError):
                if role == "default":
                    raise
                continue  # a throw-away server a test stopped: it goes with its folder
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{names[role]}" WITH (FORCE)')
                if role == "default":
                    # The mover's login outlives the database (roles are the cluster's):
                    # left behind, it would show up beside the suite's own logins.
                    login = derive_login(settings.databases["default"]).username
                    await admin.execute(f"DROP ROLE IF EXISTS {quote(login)}")
            finally:
                await admin.close()


@contextmanager
def own_databases(database_env: dict[str, str], **env: str) -> Iterator[dict[str, str]]:
    """:func:`mover_databases` for synchronous fixtures (a fleet of real processes): the
    environment of a stack whose default and archive roles have databases of their own, so
    nothing it archives touches the suite's shared ones."""
    loop = asyncio.new_event_loop()
    manager = mover_databases(database_env, None, **env)
    try:
        full, _ = loop.run_until_complete(manager.__aenter__())
        try:
            yield full
        finally:
            loop.run_until_complete(manager.__aexit__(None, None, None))
    finally:
        loop.close()


async def seed(database: DatabaseSettings, users: int = 3, *, old: bool = True) -> dict[str, Any]:
    """Per user: a soft-deleted person with an identity document, two media (one derived
    from the other) with a link row, an OCR job and an audit entry. Everything is old and
    deleted when ``old``. Returns the ids by table."""
    stamp = OLD if old else "now()"
    conn = await database.connect()
    made: dict[str, Any] = {}
    try:
        async with conn.transaction():
            tag = secrets.token_hex(3)
            made["users"] = [
                r["id"]
                for r in await conn.fetch(
                    "INSERT INTO users (username, email, hashed_password, created_at, updated_at,"
                    f" deleted_at) SELECT 'u' || $1 || g, 'u' || $1 || g || '@example.com', 'x',"
                    f" {stamp}, {stamp}, {stamp} FROM generate_series(1, $2) g RETURNING id",
                    tag,
                    users,
                )
            ]
            made["people"] = [
                r["id"]
                for r in await conn.fetch(
                    "INSERT INTO people (user_id, first_name, last_name, national_id_number,"
                    f" created_at, updated_at, deleted_at) SELECT u, 'Ada', 'Byron', 'N' || u,"
                    f" {stamp}, {stamp}, {stamp} FROM unnest($1::bigint[]) u RETURNING id",
                    made["users"],
                )
            ]
            made["media"] = [
                r["id"]
                for r in await conn.fetch(
                    "INSERT INTO media (uploaded_by, filename, original_name, mime_type,"
                    " size_bytes, path, metadata, created_at, updated_at)"
                    " SELECT u, 'scan-' || u || '.png', 'scan.png', 'image/png', 1234,"
                    f" '/s/' || u, jsonb_build_object('dpi', 300.5, 'pages', 1), {stamp},"
                    f" {stamp} FROM unnest($1::bigint[]) u RETURNING id",
                    made["users"],
                )
            ]
            made["derived"] = [
                r["id"]
                for r in await conn.fetch(
                    "INSERT INTO media (parent_id, uploaded_by, filename, original_name,"
                    " mime_type, size_bytes, path, created_at, updated_at)"
                    " SELECT m.id, m.uploaded_by, 'thumb-' || m.id || '.png', 'thumb.png',"
                    f" 'image/png', 99, '/t/' || m.id, {stamp}, {stamp}"
                    " FROM media m WHERE m.id = ANY($1::bigint[]) RETURNING id",
                    made["media"],
                )
            ]
            made["identity_documents"] = [
                r["id"]
                for r in await conn.fetch(
                    "INSERT INTO identity_documents (person_id, media_id, document_type,"
                    " document_number, issuing_country, created_at, updated_at)"
                    " SELECT p, m, 'passport', 'P' || p || $3, 'FRA', now(), now()"
                    " FROM unnest($1::bigint[], $2::bigint[]) AS x(p, m) RETURNING id",
                    made["people"],
                    made["media"],
                    tag,
                )
            ]
            made["ocr_jobs"] = [
                r["id"]
                for r in await conn.fetch(
                    "INSERT INTO ocr_jobs (media_id, document_id, engine, status)"
                    " SELECT m, d, 'tesseract', 'completed'"
                    " FROM unnest($1::bigint[], $2::bigint[]) AS x(m, d) RETURNING id",
                    made["media"],
                    made["identity_documents"],
                )
            ]
            made["mediables"] = [
                r["id"]
                for r in await conn.fetch(
                    "INSERT INTO mediables (media_id, mediable_type, mediable_id, tag)"
                    " SELECT m, 'people', p, 'scan'"
                    " FROM unnest($1::bigint[], $2::bigint[]) AS x(m, p) RETURNING id",
                    made["media"],
                    made["people"],
                )
            ]
            made["audit_logs"] = [
                r["id"]
                for r in await conn.fetch(
                    "INSERT INTO audit_logs (user_id, action, resource_type)"
                    " SELECT u, 'login', 'session' FROM unnest($1::bigint[]) u RETURNING id",
                    made["users"],
                )
            ]
    finally:
        await conn.close()
    return made


TABLES = (
    "users",
    "people",
    "media",
    "identity_documents",
    "ocr_jobs",
    "mediables",
    "audit_logs",
)


async def snapshot(database: DatabaseSettings) -> dict[str, list[str]]:
    """Every row of the default's tables, as sorted jsonb text: equal snapshots, equal data."""
    conn = await database.connect(server_settings={"TimeZone": "UTC"})
    try:
        return {
            table: [
                r[0]
                for r in await conn.fetch(f"SELECT to_jsonb(t)::text FROM {table} t ORDER BY 1")
            ]
            for table in TABLES
        }
    finally:
        await conn.close()
