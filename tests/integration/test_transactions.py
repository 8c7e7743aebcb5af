"""``db.in_transaction`` against a real deadlock: PostgreSQL ends one of the two
transactions, and the one run through it is run again instead of failing its request."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import structlog

from mnemo_core import db


@pytest.fixture
async def rows(pool: asyncpg.Pool) -> asyncpg.Pool:
    await pool.execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL DEFAULT 0)")
    await pool.execute("INSERT INTO t (id) VALUES (1), (2)")
    return pool


async def test_a_transaction_ended_by_a_deadlock_runs_again(rows: asyncpg.Pool) -> None:
    pool = rows
    a_has_1, b_has_2 = asyncio.Event(), asyncio.Event()
    attempts = 0

    async def work(conn: asyncpg.Connection) -> int:
        nonlocal attempts
        attempts += 1
        await conn.execute("UPDATE t SET v = v + 1 WHERE id = 1")
        if attempts == 1:
            a_has_1.set()
            await b_has_2.wait()
        # The first time, this waits for the other transaction, which then waits for row 1:
        # this one waited first, so its deadlock check (after deadlock_timeout) ends it.
        await conn.execute("UPDATE t SET v = v + 10 WHERE id = 2")
        return attempts

    async def other() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await a_has_1.wait()
            await conn.execute("UPDATE t SET v = v + 100 WHERE id = 2")
            b_has_2.set()
            await asyncio.sleep(0.2)
            await conn.execute("UPDATE t SET v = v + 1000 WHERE id = 1")

    with structlog.testing.capture_logs() as logs:
        done, _ = await asyncio.wait_for(asyncio.gather(db.in_transaction(pool, work), other()), 20)
    assert done == 2
    assert [e["attempt"] for e in logs if e["event"] == "transaction_conflict"] == [1]
    # Both committed, each once: the first run of ``work`` left nothing behind.
    values = dict(await pool.fetch("SELECT id, v FROM t ORDER BY id"))
    assert values == {1: 1001, 2: 110}


async def test_other_errors_are_not_run_again(rows: asyncpg.Pool) -> None:
    attempts = 0

    async def work(conn: asyncpg.Connection) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute("INSERT INTO t (id) VALUES (1)")

    with pytest.raises(asyncpg.UniqueViolationError):
        await db.in_transaction(rows, work)
    assert attempts == 1


async def test_the_last_conflict_is_raised_after_the_attempts(rows: asyncpg.Pool) -> None:
    attempts = 0

    async def work(conn: asyncpg.Connection) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute("UPDATE t SET v = v + 1 WHERE id = 1")
        raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")

    with pytest.raises(asyncpg.exceptions.DeadlockDetectedError):
        await db.in_transaction(rows, work, attempts=3)
    assert attempts == 3
    assert await rows.fetchval("SELECT v FROM t WHERE id = 1") == 0


async def test_a_frozen_transaction_stops_holding_other_writers(
    dsn: str, rows: asyncpg.Pool
) -> None:
    """A worker stopped (SIGSTOP, a paused container) in the middle of its transaction held
    the rows it had written (a job's counters) from every other writer for as long as it
    stayed stopped. The server now ends such a session: the others go on, and the frozen
    one's next statement fails as the database being unavailable (it backs off, retries)."""
    assert await rows.fetchval("SHOW idle_in_transaction_session_timeout") == "30s"
    frozen = await db.create_pool(
        dsn, application_name="test-frozen", min_size=1, max_size=1, idle_in_transaction_s=1.0
    )
    try:
        async with frozen.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await conn.execute("UPDATE t SET v = v + 1 WHERE id = 1")
            started = asyncio.get_running_loop().time()
            # Another writer of the same row gets through once the server ends the frozen
            # session (it would wait for ever otherwise: no lock_timeout is set).
            await asyncio.wait_for(rows.execute("UPDATE t SET v = v + 10 WHERE id = 1"), 10)
            assert asyncio.get_running_loop().time() - started < 5
            with pytest.raises(db.UNAVAILABLE_ERRORS):
                await conn.execute("UPDATE t SET v = v + 100 WHERE id = 2")
                await tx.commit()
        assert await rows.fetchval("SELECT v FROM t WHERE id = 1") == 10  # rolled back: +1 gone
        assert await rows.fetchval("SELECT v FROM t WHERE id = 2") == 0
    finally:
        await frozen.close()
