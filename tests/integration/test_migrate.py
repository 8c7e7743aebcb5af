"""Migrations against the real embedded PostgreSQL 18 with pgvector and PGMQ."""

from __future__ import annotations

import asyncpg
import pytest

from mnemo_core import migrate
from mnemo_core.errors import MigrationError


async def test_schema_is_complete(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        versions = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        assert {"pgmq", "0001"} <= versions
        queues = {r["queue_name"] for r in await conn.fetch("SELECT * FROM pgmq.list_queues()")}
        assert {"embed", "embed_dlq", "embed_query"} <= queues
        dim = await conn.fetchval(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'events'::regclass"
            " AND attname = 'embedding'"
        )
        assert dim == 384
        opts = await conn.fetchval(
            "SELECT reloptions FROM pg_class WHERE oid = 'pgmq.q_embed'::regclass"
        )
        assert "autovacuum_vacuum_threshold=1000" in opts
        assert await migrate.pending(conn) == []


async def test_migrate_again_applies_nothing(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await migrate.migrate(conn, embedding_dim=384) == []


async def test_other_dimension_is_refused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(MigrationError, match="384-dimensional"):
            await migrate.migrate(conn, embedding_dim=768)


async def test_edited_migration_is_refused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = '0001'")
        with pytest.raises(MigrationError, match="append-only"):
            await migrate.migrate(conn, embedding_dim=384)
