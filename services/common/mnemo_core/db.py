"""The asyncpg pool: created once by its service, handed down, closed by its creator."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

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


#: While the database is away, at most one line this often (besides the first and the last).
OUTAGE_LOG_EVERY_S = 5.0


class OutageLog:
    """The log lines of one database outage, for a process that meets it again and again:
    the first failure at once, then at most one line every ``every_s`` seconds, each with
    how many failures it stands for (the field ``counted``, this one included), and one
    line when the database answers again (``recovered``).

    A line per failure buried the log: the API answers every request with 503 while the
    database is away, thousands a second under load (an audit saw 7,352 lines in 25 s),
    and whatever else was said was lost among them. Summed over an outage's lines, the
    counts are still every failure."""

    def __init__(
        self,
        *,
        counted: str = "failures",
        every_s: float = OUTAGE_LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counted = counted
        self.every_s = every_s
        self._clock = clock
        self._began: float | None = None  # None: the database answered last
        self._logged_at = 0.0
        self._untold = 0  # failures since the last line

    def failed(self, **fields: Any) -> None:
        """A call found the database away (``fields``: what this one was, its error)."""
        now = self._clock()
        self._untold += 1
        if self._began is None:
            self._began = now
        elif now - self._logged_at < self.every_s:
            return
        self._logged_at = now
        log.warning("database_unavailable", **self._summary(now), **fields)

    def recovered(self, **fields: Any) -> None:
        """A call got through: the end of the outage, if there was one."""
        if self._began is None:
            return
        log.info("database_available", **self._summary(self._clock()), **fields)
        self._began = None

    def _summary(self, now: float) -> dict[str, Any]:
        assert self._began is not None
        told, self._untold = self._untold, 0
        return {self.counted: told, "outage_s": round(now - self._began, 1)}


class BriefPoolWarnings(logging.Filter):
    """asyncpg's pool logs each failed attempt to restore its minimum of connections
    (after 1, 2, 4 ... 60 s) as a warning with the full traceback of the connection error:
    a dozen lines each, saying only that the database is away, which the services already
    log (:class:`OutageLog`). This keeps such a warning to one line with the error at its
    end; any other record, or one caused by something else, passes as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and isinstance(exc, UNAVAILABLE_ERRORS):
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_pool_warnings() -> None:
    """Install :class:`BriefPoolWarnings` on asyncpg's pool logger (once per process)."""
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, BriefPoolWarnings) for f in pool_log.filters):
        pool_log.addFilter(BriefPoolWarnings())


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
    command_timeout_s: float = 60.0,
) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=init_connection,
            reset=keep_session,
            command_timeout=command_timeout_s,
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
    pool: asyncpg.Pool,
    work: Callable[[asyncpg.Connection], Awaitable[T]],
    *,
    attempts: int = 3,
    acquire_timeout_s: float | None = None,
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
            async with pool.acquire(timeout=acquire_timeout_s) as conn, conn.transaction():
                return await work(conn)
    raise AssertionError("unreachable: tenacity either returns an attempt or raises")


def _log_conflict(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.info("transaction_conflict", error=str(exc), attempt=state.attempt_number)
