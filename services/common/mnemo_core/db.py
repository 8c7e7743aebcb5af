"""The asyncpg pool: created once by its service, handed down, closed by its creator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from pgvector.asyncpg import register_vector

from mnemo_core.errors import DatabaseUnavailable

# Errors that mean "the database is not there right now" rather than "this query is wrong".
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.PostgresConnectionError,
)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Codecs every connection needs: jsonb as Python objects, vector as numpy arrays."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        await register_vector(conn)
    except ValueError:
        # Before the first migration the vector type does not exist yet.
        pass


async def create_pool(
    dsn: str, *, application_name: str, min_size: int = 1, max_size: int = 10
) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=init_connection,
            command_timeout=60,
            server_settings={"application_name": application_name[:63]},
        )
    except UNAVAILABLE_ERRORS as exc:
        raise DatabaseUnavailable(str(exc)) from exc
    assert pool is not None
    return pool


async def connect(dsn: str, *, application_name: str) -> asyncpg.Connection:
    """A single dedicated connection (LISTEN, migrations)."""
    try:
        conn = await asyncpg.connect(
            dsn, server_settings={"application_name": application_name[:63]}
        )
    except UNAVAILABLE_ERRORS as exc:
        raise DatabaseUnavailable(str(exc)) from exc
    await init_connection(conn)
    return conn


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as conn, conn.transaction():
        yield conn
