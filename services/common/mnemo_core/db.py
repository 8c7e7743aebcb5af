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
    DatabaseUnavailable,
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
    # asyncpg reports a connection that died under a transaction or a pooled connection
    # as an InterfaceError ("the underlying connection is closed").
    asyncpg.exceptions.InterfaceError,
    # ... and a connection killed mid-query by a server shutdown, on its way back to the
    # pool, as "another operation is in progress" (the pool then drops that connection).
    asyncpg.exceptions.InternalClientError,
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


async def keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's reset query (RESET ALL, UNLISTEN *, ...): one round
    trip saved per use. Pooled connections keep no session state here (settings are SET
    LOCAL, advisory locks are transaction locks, LISTEN has its own connections); asyncpg
    still rolls back a transaction left open."""


async def create_pool(
    dsn: str, *, application_name: str, min_size: int = 1, max_size: int = 10
) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=init_connection,
            reset=keep_session,
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
