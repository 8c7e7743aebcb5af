"""Start-up while the database is away: ``service.open_pool`` waits for it (the
embedder loads its model between its schema check and its pool, and the database can go in
between: it used to exit). Against a real PostgreSQL that is stopped and started again."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mnemo_core import db, migrate, service
from mnemo_core.errors import DatabaseUnavailable
from mnemo_core.localpg import LocalPostgres, free_port


@pytest.fixture
def tmp_path(pg_home: Path) -> Path:
    """Each test's folder is outside pytest's temporary root: PostgreSQL runs in it
    (tests/conftest.py, ``_outside_pytest_temp``)."""
    return pg_home


async def test_waits_for_a_database_that_comes_back(tmp_path: Path) -> None:
    pg = LocalPostgres(tmp_path / "db", port=free_port(), durable=False)
    await asyncio.to_thread(pg.start)
    try:
        conn = await db.connect(pg.dsn(), application_name="test")
        await migrate.migrate(conn, embedding_dim=384)
        await conn.close()
        await asyncio.to_thread(pg.stop)

        with pytest.raises(DatabaseUnavailable, match="not ready after"):
            await service.open_pool(
                pg.dsn(), application_name="t", min_size=1, max_size=2, within_s=1
            )

        opening = asyncio.ensure_future(
            service.open_pool(pg.dsn(), application_name="t", min_size=1, max_size=2, within_s=60)
        )
        await asyncio.sleep(1.5)
        assert not opening.done()  # still waiting, not failed
        await asyncio.to_thread(pg.start)
        pool = await asyncio.wait_for(opening, 60)
        try:
            assert await pool.fetchval("SELECT count(*) FROM schema_migrations") > 0
        finally:
            await pool.close()
    finally:
        await asyncio.to_thread(pg.stop)


async def test_migrate_when_ready_waits_for_a_database_that_starts_late(tmp_path: Path) -> None:
    """The API, ``mnemo migrate`` and ``mnemo up`` migrate through ``migrate_when_ready``: it
    gives up with the reason after its time, and waits for a database that comes up."""
    pg = LocalPostgres(tmp_path / "db", port=free_port(), durable=False)
    await asyncio.to_thread(pg.start)
    await asyncio.to_thread(pg.stop)
    try:
        with pytest.raises(DatabaseUnavailable, match="not ready after 1s"):
            await service.migrate_when_ready(
                pg.dsn(), embedding_dim=384, application_name="t", within_s=1
            )
        migrating = asyncio.ensure_future(
            service.migrate_when_ready(
                pg.dsn(), embedding_dim=384, application_name="t", within_s=60
            )
        )
        await asyncio.sleep(1.0)
        assert not migrating.done()  # still waiting, not failed
        await asyncio.to_thread(pg.start)
        applied = await asyncio.wait_for(migrating, 60)
        assert applied and applied == sorted(applied)
        conn = await db.connect(pg.dsn(), application_name="test")
        try:
            assert not await migrate.pending(conn)
            assert (
                await service.migrate_when_ready(pg.dsn(), embedding_dim=384, application_name="t")
                == []
            )
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(pg.stop)


async def test_waits_again_when_the_database_goes_before_the_pool(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schema check passed, then the pool's first connection fails (the database went
    away in between): it checks and tries again rather than raising."""
    real = db.create_pool
    calls = 0

    async def gone_once(*args: Any, **kwargs: Any) -> asyncpg.Pool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise DatabaseUnavailable("the database system is shutting down")
        return await real(*args, **kwargs)

    monkeypatch.setattr(db, "create_pool", gone_once)
    pool = await service.open_pool(dsn, application_name="t", min_size=1, max_size=2)
    try:
        assert calls == 2
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_a_worker_registers_after_the_database_comes_back(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database goes away between the pool's first connection and the worker's
    registration (asyncpg then reports the killed connection as "another operation is in
    progress"): the worker waits and registers, where it used to exit."""
    from mnemo_core import workers
    from mnemo_core.settings import Settings
    from mnemo_core.worker_base import QueueWorker

    real = workers.register
    calls = 0

    async def gone_once(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncpg.exceptions.InternalClientError("another operation is in progress")
        await real(*args, **kwargs)

    monkeypatch.setattr(workers, "register", gone_once)

    class Once(QueueWorker):
        async def _read_and_process(self) -> None:
            self.stop()

    await asyncio.wait_for(Once(pool, Settings(), worker_id="w-back", once=True).run(), 30)
    assert calls == 2
    assert await pool.fetchval("SELECT count(*) FROM workers WHERE id = 'w-back'") == 1


async def test_a_worker_backs_off_while_the_database_is_away_and_stops_at_once(
    pool: asyncpg.Pool,
) -> None:
    """A batch step that keeps failing to reach the database is tried again after 0.25,
    0.5, 1, then every 2 s (the wait grew to 10 s: a worker resumed up to 10 s after the
    database came back); the first failure is logged at once, the next ones summed up
    later; and a stop during a wait ends the worker then, not when the wait is over."""
    import structlog

    from mnemo_core.settings import Settings
    from mnemo_core.worker_base import QueueWorker

    tries: list[float] = []
    loop = asyncio.get_running_loop()

    class Away(QueueWorker):
        async def _read_and_process(self) -> None:
            tries.append(loop.time())
            raise ConnectionRefusedError("connection refused")

    worker = Away(pool, Settings(), worker_id="w-away")
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(worker._until_available(worker._read_and_process))
        while len(tries) < 6:  # at 0, 0.25, 0.75, 1.75, 3.75 and 5.75 s
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # inside the next 2 s wait
        worker.stop()
        started = loop.time()
        await asyncio.wait_for(task, 5)
    assert loop.time() - started < 0.5
    assert len(tries) == 6, "a stopped worker does not try again"
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    for gap, expected in zip(gaps, [0.25, 0.5, 1.0, 2.0, 2.0], strict=True):
        assert expected - 0.05 < gap < expected + 0.4, gaps
    waits = [e for e in logs if e["event"] == "database_unavailable"]
    assert [(e["retry_in_s"], e["failures"], e["loop"]) for e in waits] == [
        (0.25, 1, "batches"),
        (2.0, 5, "batches"),  # 5 s later: the failures since the first line
    ]
    assert all(e["error"] == "connection refused" and e["worker_id"] == "w-away" for e in waits)


class Stall:
    """Every process of a local PostgreSQL stopped (SIGSTOP): a database that holds its
    connections but answers nothing, until ``end``."""

    def __init__(self, pg: LocalPostgres) -> None:
        self.pg = pg
        self.stopped: list[int] = []

    def begin(self) -> None:
        import psutil

        postmaster = psutil.Process(int((self.pg.pgdata / "postmaster.pid").read_text().split()[0]))
        self.stopped = [p.pid for p in (postmaster, *postmaster.children())]
        for pid in self.stopped:
            os.kill(pid, signal.SIGSTOP)

    def end(self) -> None:
        for pid in self.stopped:
            os.kill(pid, signal.SIGCONT)
        self.stopped = []


async def test_ready_answers_503_at_once_when_the_database_stops_answering(
    tmp_path: Path,
) -> None:
    """A database that holds its connections but answers nothing (its processes stopped:
    a stall, a freeze) is not ready: /ready says so within its 3 s, where it used to wait
    for the query (asyncpg's 60 s) and could even answer 200 once the stall ended."""
    import httpx

    from mnemo_api.app import create_app
    from tests.integration.test_api import make_settings

    pg = LocalPostgres(tmp_path / "db", port=free_port(), durable=False)
    await asyncio.to_thread(pg.start)
    stall = Stall(pg)
    try:
        app = create_app(make_settings(pg.dsn()))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as api:
                assert (await api.get("/ready")).status_code == 200
                stall.begin()
                started = time.monotonic()
                r = await api.get("/ready")
                took = time.monotonic() - started
                stall.end()
                assert r.status_code == 503 and r.json()["error"] == "TimeoutError", r.text
                assert took < 10, took
    finally:
        stall.end()
        await asyncio.to_thread(pg.stop)


async def test_every_request_gets_its_503_within_the_timeouts_when_the_database_stalls(
    tmp_path: Path,
) -> None:
    """A database that holds its connections but answers nothing: the requests holding a
    pooled connection get their 503 after MNEMO_DB_COMMAND_TIMEOUT_S, and those waiting for
    one after MNEMO_DB_ACQUIRE_TIMEOUT_S. They used to wait for a connection without end,
    then stall on their own statement: 14 requests on 10 connections got their 503 after
    60 s (8) and 120 s (6). The API answers again once the database does."""
    import httpx

    from mnemo_api.app import create_app
    from tests.integration.test_api import make_settings

    pg = LocalPostgres(tmp_path / "db", port=free_port(), durable=False)
    await asyncio.to_thread(pg.start)
    stall = Stall(pg)
    settings = make_settings(
        pg.dsn(), db_pool_max=2, db_command_timeout_s=3, db_acquire_timeout_s=1
    )
    try:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1", timeout=60
            ) as api:
                assert (await api.get("/v1/jobs")).status_code == 200
                stall.begin()
                started = time.monotonic()

                async def one() -> tuple[int, float]:
                    r = await api.get("/v1/jobs")
                    return r.status_code, time.monotonic() - started

                answers = await asyncio.gather(*(one() for _ in range(8)))
                stall.end()
                assert [status for status, _ in answers] == [503] * 8, answers
                took = sorted(t for _, t in answers)
                # At most 2 held a connection (3 s); the others waited 1 s for one. Before,
                # they came in pairs: 3, 6, 9 and 12 s.
                assert took[-1] < 5.5, took
                assert took[5] < 2.5, took
                for _ in range(100):  # the pool replaces the connections the stall broke
                    if (await api.get("/v1/jobs")).status_code == 200:
                        break
                    await asyncio.sleep(0.2)
                else:
                    raise AssertionError("the API did not answer again after the stall")
    finally:
        stall.end()
        await asyncio.to_thread(pg.stop)


def _command_lines() -> list[bytes]:
    out = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(p.read_bytes())
        except OSError:  # gone meanwhile
            pass
    return out


def test_a_stale_pid_file_naming_another_live_process_does_not_stop_a_start(
    tmp_path: Path,
) -> None:
    """The server was killed; its pid file stayed, and its PID now belongs to another live
    process (here this test's own). `mnemo up` took that for a running server, waited for
    it, and failed on every start until someone deleted the file."""
    pg = LocalPostgres(tmp_path / "db", port=free_port(), durable=False)
    pg.start()
    try:
        pidfile = pg.pgdata / "postmaster.pid"
        lines = pidfile.read_text().splitlines(keepends=True)
        os.kill(int(lines[0]), signal.SIGKILL)
        for _ in range(100):  # until its children notice and exit
            if not any(os.fsencode(pg.pgdata) in argv for argv in _command_lines()):
                break
            time.sleep(0.1)
        pidfile.write_text("".join([f"{os.getpid()}\n", *lines[1:]]))
        assert not pg.running()
        pg.start()
        assert pg.running()
        assert int(pidfile.read_text().splitlines()[0]) != os.getpid()
    finally:
        pg.stop()


async def test_the_supervisor_starts_its_embedded_postgres_again(tmp_path: Path) -> None:
    """`mnemo up` restarted a child that died, but not PostgreSQL: once it was killed (the
    OOM killer, say), every request answered 503 until someone restarted it by hand."""
    from mnemo_cli.runner import Supervisor

    pg = LocalPostgres(tmp_path / "db", port=free_port(), durable=False)
    await asyncio.to_thread(pg.start)
    supervisor = Supervisor([], json_output=True, database=pg)
    running = asyncio.ensure_future(supervisor.run(grace_s=5))
    try:
        pid = int((pg.pgdata / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
        for _ in range(300):  # until a new server answers (after its crash recovery)
            await asyncio.sleep(0.1)
            try:
                conn = await db.connect(pg.dsn(), application_name="test")
            except DatabaseUnavailable:
                continue
            assert await conn.fetchval("SELECT pg_backend_pid()") > 0
            await conn.close()
            break
        else:
            raise AssertionError("PostgreSQL was not started again")
        assert int((pg.pgdata / "postmaster.pid").read_text().split()[0]) != pid
    finally:
        supervisor.stop()
        await asyncio.wait_for(running, 30)
        await asyncio.to_thread(pg.stop)
