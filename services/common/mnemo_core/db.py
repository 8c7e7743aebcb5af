"""The asyncpg pool: created once by its service, handed down, closed by its creator."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import tenacity
from pgvector.asyncpg import register_vector

from mnemo_core import logging as mlog
from mnemo_core.errors import DatabaseUnavailable

log = mlog.get(__name__)
T = TypeVar("T")

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
    # This process sat in a transaction past IDLE_IN_TRANSACTION_S (stopped, frozen): the
    # server ended its session and rolled the transaction back.
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
)

# A service's session that sits in a transaction this long doing nothing is ended by the
# server, its transaction rolled back and its locks released. No transaction of ours waits
# on anything but the database in the middle, so only a process that is stopped or frozen
# (SIGSTOP, a paused VM or container, a cut network that keeps the socket open) gets there;
# its rows (a job's counters, events a redelivered message names) would otherwise hold
# every other writer of them for as long as it stays frozen.
IDLE_IN_TRANSACTION_S = 30.0

# Errors PostgreSQL ends one of two conflicting transactions with (a deadlock, a
# serialization failure): nothing was written, and the same transaction run again succeeds.
CONFLICT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
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
    dsn: str,
    *,
    application_name: str,
    min_size: int = 1,
    max_size: int = 10,
    idle_in_transaction_s: float = IDLE_IN_TRANSACTION_S,
) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=init_connection,
            reset=keep_session,
            command_timeout=60,
            server_settings={
                "application_name": application_name[:63],
                "idle_in_transaction_session_timeout": str(int(idle_in_transaction_s * 1000)),
            },
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


async def in_transaction(
    pool: asyncpg.Pool, work: Callable[[asyncpg.Connection], Awaitable[T]], *, attempts: int = 3
) -> T:
    """``work(conn)`` in a transaction, run again (up to ``attempts`` times in all, after a
    few random milliseconds) when PostgreSQL ends it for a deadlock or a serialization
    conflict with another one. ``work`` must do nothing outside the database that a second
    run would repeat. The last conflict is raised as it is."""
    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(CONFLICT_ERRORS),
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_random(0.005, 0.05),  # apart, so the two do not meet again
        before_sleep=_log_conflict,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            async with pool.acquire() as conn, conn.transaction():
                return await work(conn)
    raise AssertionError("unreachable: tenacity either returns an attempt or raises")


def _log_conflict(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.info("transaction_conflict", error=str(exc), attempt=state.attempt_number)
