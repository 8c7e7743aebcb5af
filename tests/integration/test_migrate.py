"""Migrations against the real embedded PostgreSQL 18 with pgvector and PGMQ."""

from __future__ import annotations

import asyncpg
import pytest

from mnemo_core import migrate
from mnemo_core.errors import MigrationError
from mnemo_core.localpg import LocalPostgres


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


async def test_postgres_accepts_every_lexical_document(pool: asyncpg.Pool) -> None:
    """chunk_lexemes' literals are valid tsvectors, odd input included, and a lexical query
    built by lexical_terms matches them."""
    from mnemo_core.text import chunk_lexemes, lexical_terms, tsquery

    docs = [
        chunk_lexemes("", "", "", "", ""),
        chunk_lexemes(
            "a/ü b.py", "a.ü b.Ωmega", "fn(x: 'q', y=\"\\\\\")", "ça:va; 'x' \\n", "$x_1"
        ),
        chunk_lexemes("a.py", "a.f", "", "the " * 400 + "İstanbul ﬁ ẞ", "x" * 3000 + " y" * 10),
        chunk_lexemes("a.py", "a.f", "", "", " ".join(f"name{i}" for i in range(60_000))),
        chunk_lexemes("m.js", "m.parseHTTPResponse", "", "", "parseHTTPResponse(x)"),
    ]
    async with pool.acquire() as conn:
        sizes = await conn.fetch("SELECT length(d::tsvector) AS n FROM unnest($1::text[]) d", docs)
        assert [r["n"] > 0 for r in sizes] == [False, True, True, True, True]
        q = tsquery(lexical_terms("parse http response"))
        assert await conn.fetchval("SELECT $1::tsvector @@ to_tsquery('simple', $2)", docs[-1], q)


async def test_chunks_indexed_before_0005_keep_their_lexical_documents(
    pg: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0005 turns the generated tsv into a plain column: rows written before keep theirs."""
    name = "t_before_0005"
    admin = await asyncpg.connect(pg.dsn("postgres"))
    await admin.execute(f"DROP DATABASE IF EXISTS {name}")
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    conn = await asyncpg.connect(pg.dsn(name))
    try:
        every = migrate.available()
        monkeypatch.setattr(migrate, "available", lambda: [m for m in every if m.version < "0005"])
        await migrate.migrate(conn, embedding_dim=384)
        await conn.execute("INSERT INTO code_repositories (name) VALUES ('r')")
        file_id = await conn.fetchval(
            "INSERT INTO code_files (repository, path, module, content, content_hash, size_bytes)"
            " VALUES ('r', 'a.py', 'a', 'x', 'h', 1) RETURNING id"
        )
        await conn.execute(
            "INSERT INTO code_chunks (file_id, repository, path, language, kind, name,"
            " qualified_name, start_line, end_line, content, content_hash, embed_hash, search_text)"
            " VALUES ($1, 'r', 'a.py', 'python', 'function', 'f', 'a.f', 1, 1, 'x', 'h', 'e',"
            " 'apply discount')",
            file_id,
        )
        monkeypatch.setattr(migrate, "available", lambda: every)
        assert "0005" in await migrate.migrate(conn, embedding_dim=384)
        assert await conn.fetchval("SELECT tsv::text FROM code_chunks") == "'apply':1 'discount':2"
        columns = {
            r["attname"]
            for r in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'code_chunks'::regclass"
            )
        }
        assert "search_text" not in columns
    finally:
        await conn.close()
        admin = await asyncpg.connect(pg.dsn("postgres"))
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
