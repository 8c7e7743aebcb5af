"""While the database is away, and when it comes back: what the API and the workers log,
in-process against a real PostgreSQL that is stopped and started again."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import structlog

from mnemo_api.app import create_app
from mnemo_core import db, events, worker_base
from mnemo_core.localpg import LocalPostgres, free_port
from mnemo_embedder.model import HashModel
from mnemo_embedder.worker import EmbedWorker
from tests.helpers import migrate_now, wait_for
from tests.integration.test_api import make_settings
from tests.integration.test_embed_worker import settings as worker_settings

OUTAGE_LINES = ("database_unavailable", "database_available")
EVERY_S = 5.0  # db.OUTAGE_LOG_EVERY_S: at most a line this often during an outage


@pytest.fixture
async def own_pg(pg_home: Path) -> AsyncIterator[LocalPostgres]:
    """A server of the test's own, with the schema: the test stops it."""
    pg = LocalPostgres(pg_home / "db", port=free_port(), durable=False)
    await asyncio.to_thread(pg.start)
    await asyncio.to_thread(migrate_now, pg.dsn())
    yield pg
    await asyncio.to_thread(pg.stop)


async def test_the_api_logs_an_outage_in_a_few_lines_not_one_per_request(
    own_pg: LocalPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    """Every request refused during an outage logged a line (7,352 in 25 s under load):
    now the first one, then one every interval counting the refusals since the previous
    line, and one when the database answers again; the counts add up to every 503. asyncpg's
    attempts to restore its pool's minimum come without their tracebacks."""
    db.quiet_pool_warnings()  # what service.start does in the real process
    app = create_app(make_settings(own_pg.dsn(), ops_sample_s=0.2))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as api:
            event = {"content": {"text": "during"}}
            assert (await api.post("/v1/events", json=event)).status_code == 202
            await asyncio.to_thread(own_pg.stop)
            statuses: list[int] = []
            with structlog.testing.capture_logs() as logs, caplog.at_level(logging.WARNING):
                started = time.monotonic()
                while time.monotonic() - started < 1.6:
                    statuses.append((await api.post("/v1/events", json=event)).status_code)
                took = time.monotonic() - started
                assert set(statuses) == {503} and len(statuses) > 20, statuses
                down = [e for e in logs if e["event"] == "database_unavailable"]
                # The first refusal at once, then a line every 5 s at most.
                assert 1 <= len(down) <= took / EVERY_S + 1, len(down)
                assert down[0]["refused"] == 1 and down[0]["path"] == "/v1/events"

                await asyncio.to_thread(own_pg.start)

                async def ended() -> bool:
                    return any(e["event"] == "database_available" for e in logs)

                await wait_for(ended, timeout=30, what="the end of the outage logged")
            assert (await api.post("/v1/events", json=event)).status_code == 202
    lines = [e for e in logs if e["event"] in OUTAGE_LINES]
    assert lines[:-1] == down and lines[-1]["event"] == "database_available"
    assert sum(e["refused"] for e in lines) == len(statuses)
    floor = [r for r in caplog.records if r.name == "asyncpg.pool"]
    assert floor and all(r.exc_info is None for r in floor)


async def test_a_worker_logs_an_outage_in_a_few_lines(own_pg: LocalPostgres) -> None:
    """An embedder's loops (batches, heartbeat, query embeddings) each logged every failed
    attempt, the query loop once a second, the heartbeat at each beat: now one log for the
    worker, a line now and then counting the failures, and one when the database is back."""
    pool = await db.create_pool(own_pg.dsn(), application_name="t", min_size=1, max_size=4)
    settings = worker_settings(heartbeat_s=0.1, database_url=own_pg.dsn())
    worker = EmbedWorker(pool, HashModel(384), settings, worker_id=f"w-{uuid.uuid4().hex[:6]}")
    running = asyncio.ensure_future(worker.run())
    try:
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) FROM workers"), what="the worker registered"
        )
        with structlog.testing.capture_logs() as logs:
            started = time.monotonic()
            await asyncio.to_thread(own_pg.stop)
            await asyncio.sleep(2.5)
            took = time.monotonic() - started
            events = [e["event"] for e in logs]
            assert "heartbeat_failed" not in events and "query_loop_db_error" not in events
            down = [e for e in logs if e["event"] == "database_unavailable"]
            assert 1 <= len(down) <= took / EVERY_S + 1, len(down)
            assert {e["loop"] for e in down} <= {"batches", "heartbeat", "query-embeddings"}

            await asyncio.to_thread(own_pg.start)

            async def ended() -> bool:
                return any(e["event"] == "database_available" for e in logs)

            await wait_for(ended, timeout=30, what="the end of the outage logged")
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)
        await pool.close()
    lines = [e for e in logs if e["event"] in OUTAGE_LINES]
    assert lines[:-1] == down and lines[-1]["event"] == "database_available"
    # The heartbeat alone failed some 25 times: many failures, few lines.
    assert sum(e["failures"] for e in lines) > 10 * len(lines)


async def test_a_worker_beats_again_within_seconds_of_the_databases_return(
    own_pg: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an outage longer than MNEMO_WORKER_DEAD_AFTER_S a worker counted as dead (and
    text search answered 503) until its next heartbeat, up to MNEMO_HEARTBEAT_S after the
    database's return: a failed heartbeat now tries again at the batches' backoff (2 s;
    0.2 s here, so the test is short)."""
    monkeypatch.setattr(worker_base, "BACKOFF_MAX_S", 0.2)
    pool = await db.create_pool(own_pg.dsn(), application_name="t", min_size=1, max_size=4)
    settings = worker_settings(heartbeat_s=6.0, database_url=own_pg.dsn())
    worker = EmbedWorker(pool, HashModel(384), settings, worker_id=f"w-{uuid.uuid4().hex[:6]}")
    failed_loops: list[str] = []
    told = worker.outage.failed

    def failed(**fields: object) -> None:
        failed_loops.append(str(fields.get("loop")))
        told(**fields)

    worker.outage.failed = failed  # type: ignore[method-assign]
    running = asyncio.ensure_future(worker.run())
    try:
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) FROM workers"), what="the worker registered"
        )
        await asyncio.to_thread(own_pg.stop)

        async def beat_failed() -> bool:
            return "heartbeat" in failed_loops

        await wait_for(beat_failed, timeout=20, what="a heartbeat failed in the outage")
        await asyncio.sleep(0.5)  # an outage longer than the heartbeat's retry
        back = time.monotonic()  # a beat as soon as the server answers is one after this
        await asyncio.to_thread(own_pg.start)

        async def beaten() -> bool:
            try:
                age = await pool.fetchval("SELECT now() - last_heartbeat FROM workers")
            except db.UNAVAILABLE_ERRORS:
                return False
            return bool(age.total_seconds() < time.monotonic() - back)

        # Without the change, the next beat came MNEMO_HEARTBEAT_S (6 s) after the failure.
        await wait_for(beaten, timeout=3, what="a heartbeat after the database's return")
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)
        await pool.close()


async def test_an_embedder_takes_up_work_within_seconds_of_the_databases_return(
    own_pg: LocalPostgres,
) -> None:
    """Embedders resumed 17 to 22 s after the database came back, or later. A write the
    outage cut was raised again at the next flush, once the database was back: one more
    wait, and the group read then was held unwritten for its visibility timeout; and every
    message read but not written waited out its visibility timeout (a minute by default),
    the whole backlog when one read took it. Here a read of three groups is cut at each
    step (the first group's write held by a row lock when the database stops, the second's
    write and the third's triage failing with it); once the database is back, all of it and
    an event queued then are embedded within seconds, each event once."""
    dsn = own_pg.dsn()
    pool = await db.create_pool(dsn, application_name="mnemo-embedder:t", min_size=1, max_size=4)
    settings = worker_settings(database_url=dsn, poll_seconds=4, visibility_timeout_s=120)
    worker = EmbedWorker(pool, HashModel(384), settings, worker_id=f"w-{uuid.uuid4().hex[:6]}")
    # Three messages of 200 events: one read (4 messages of 64 expected), three groups.
    held = await _ingest(pool, [f"held {i}" for i in range(600)], message_batch=200)
    locker = await asyncpg.connect(dsn)
    await locker.execute("BEGIN")
    await locker.execute("SELECT 1 FROM events WHERE id = $1 FOR UPDATE", held[0])
    running = asyncio.ensure_future(worker.run())
    try:
        back = await _stopped_under_a_write(own_pg, locker, "mnemo-embedder:t")
        after = await _ingest(pool, ["queued once the database is back"], message_batch=8)

        async def all_embedded() -> bool:
            return await pool.fetchval(
                "SELECT count(*) FROM events WHERE embedding_status = 'done'"
            ) == len(held) + len(after)

        await wait_for(all_embedded, timeout=20, interval=0.05, what="every event embedded")
        took = time.monotonic() - back
        assert took < 8.0, took  # the next attempt (2 s at most), then the batches
        jobs = await pool.fetch("SELECT done, total FROM jobs")
        assert sorted((j["done"], j["total"]) for j in jobs) == [(1, 1), (600, 600)]
        assert await pool.fetchval("SELECT count(*) FROM pgmq.q_embed") == 0
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)
        await pool.close()
        if not locker.is_closed():
            locker.terminate()


async def _stopped_under_a_write(
    pg: LocalPostgres, locker: asyncpg.Connection, application_name: str
) -> float:
    """Once a write of ``application_name`` waits on the lock ``locker`` holds, stop the
    database for 2 s; returns when it was up again (time.monotonic())."""

    async def write_blocked() -> bool:
        # The locker is in a transaction: the activity view is a snapshot taken at its first
        # read there, unless cleared.
        await locker.execute("SELECT pg_stat_clear_snapshot()")
        return bool(
            await locker.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND application_name = $1",
                application_name,
            )
        )

    await wait_for(write_blocked, timeout=30, what="the first write to wait on the lock")
    await asyncio.to_thread(pg.stop)
    await asyncio.sleep(2.0)
    await asyncio.to_thread(pg.start)
    return time.monotonic()


async def _ingest(pool: asyncpg.Pool, texts: list[str], *, message_batch: int) -> list[uuid.UUID]:
    """Events queued for embedding (one job), once the pool reaches the database again."""

    async def once() -> list[uuid.UUID] | None:
        items = [events.NewEvent({"text": t}, {}, None, None) for t in texts]
        try:
            async with pool.acquire() as conn:
                got = await events.ingest(
                    conn, items, model="hash-384", message_batch=message_batch
                )
        except db.UNAVAILABLE_ERRORS:
            return None
        return got.event_ids

    return await wait_for(once, timeout=30, what="the events queued")


async def test_an_indexer_takes_up_work_within_seconds_of_the_databases_return(
    own_pg: LocalPostgres,
) -> None:
    """The messages an indexer held when the database went away waited out their visibility
    timeout (two minutes here) before anyone parsed them again: now they are handed back as
    soon as it answers. The first message's write waits on the repository's lock when the
    database stops; the other messages of the read are behind it."""
    from mnemo_core import code
    from mnemo_indexer.pool import ParsePool
    from mnemo_indexer.worker import IndexWorker

    dsn = own_pg.dsn()
    pool = await db.create_pool(dsn, application_name="mnemo-indexer:t", min_size=1, max_size=4)
    parser = ParsePool(1, 20)
    settings = worker_settings(
        database_url=dsn, poll_seconds=2, visibility_timeout_s=120, index_messages=4
    )
    worker = IndexWorker(pool, settings, parser, worker_id=f"i-{uuid.uuid4().hex[:6]}")
    files = [
        code.SourceFile.of_text(f"m{i}.py", f"def f{i}():\n    return {i}\n") for i in range(48)
    ]
    async with pool.acquire() as conn, conn.transaction():
        await code.index_files(conn, "shop", files, commit=None, prune=False)  # 3 messages
    locker = await asyncpg.connect(dsn)
    await locker.execute("BEGIN")
    await locker.execute("SELECT pg_advisory_xact_lock(hashtextextended('mnemo-repo:shop', 0))")
    running = asyncio.ensure_future(worker.run())
    try:
        back = await _stopped_under_a_write(own_pg, locker, "mnemo-indexer:t")

        async def all_indexed() -> bool:
            try:
                return await pool.fetchval(
                    "SELECT count(*) FROM code_files WHERE status = 'indexed'"
                ) == len(files)
            except db.UNAVAILABLE_ERRORS:
                return False

        await wait_for(all_indexed, timeout=30, interval=0.1, what="every file indexed")
        took = time.monotonic() - back
        assert took < 10.0, took  # the next attempt (2 s at most), then the parsing
        assert await pool.fetchval("SELECT count(*) FROM pgmq.q_index") == 0
        assert await pool.fetchval("SELECT count(*) FROM pgmq.q_index_dlq") == 0
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)
        await pool.close()
        parser.close()
        if not locker.is_closed():
            locker.terminate()
