"""The database goes away and comes back: the API answers 503 with Retry-After (never 500),
/ready goes red then green, the embedder reconnects, and nothing is lost."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from mnemo_core.localpg import LocalPostgres, free_port
from tests.helpers import Proc, migrate_now, service_env, wait_for_sync, wait_ready

pytestmark = pytest.mark.acceptance


def test_api_and_embedder_survive_a_database_restart(tmp_path: Path, pg_home: Path) -> None:
    pg = LocalPostgres(pg_home / "db", port=free_port(), durable=False)
    dsn = pg.start()
    migrate_now(dsn)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = service_env(
        MNEMO_DATABASE_URL=dsn,
        MNEMO_API_PORT=str(port),
        MNEMO_EMBEDDING_MODEL="hash-384",
        MNEMO_HEARTBEAT_S="0.5",
        MNEMO_VISIBILITY_TIMEOUT_S="5",
    )
    api = Proc("api", ["mnemo-api"], env, tmp_path).start()
    embedder = Proc("embedder", ["mnemo-embedder"], env, tmp_path).start()
    try:
        wait_ready(url, api)
        first = httpx.post(f"{url}/v1/events", json={"content": {"text": "before"}}).json()

        pg.stop()
        r = httpx.get(f"{url}/ready")
        assert r.status_code == 503 and r.headers["retry-after"]
        for _ in range(3):  # stale pooled connections and refused new ones alike
            r = httpx.post(f"{url}/v1/events", json={"content": {"text": "during"}})
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] and "database" in r.json()["detail"]
            assert "Traceback" not in r.text
        assert httpx.get(f"{url}/health").status_code == 200

        pg.start()
        wait_for_sync(
            lambda: httpx.get(f"{url}/ready").status_code == 200,
            timeout=30,
            what="/ready to recover",
        )

        def accepted() -> dict | None:
            r = httpx.post(f"{url}/v1/events", json={"content": {"text": "after"}})
            return r.json() if r.status_code == 202 else None

        second = wait_for_sync(accepted, timeout=30, what="writes to be accepted again")
        for job_id in (first["job_id"], second["job_id"]):
            wait_for_sync(
                lambda j=job_id: httpx.get(f"{url}/v1/jobs/{j}").json()["status"] == "succeeded",
                timeout=60,
                what="jobs to succeed after the restart",
            )

        async def rows() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(dsn)
            try:
                return list(
                    await conn.fetch("SELECT content->>'text' AS t, embedding_status FROM events")
                )
            finally:
                await conn.close()

        got = sorted((r["t"], r["embedding_status"]) for r in asyncio.run(rows()))
        assert got == [("after", "done"), ("before", "done")]
        assert embedder.proc is not None and embedder.proc.poll() is None
    finally:
        api.stop()
        embedder.stop()
        pg.stop()


def test_api_waits_for_a_database_that_is_not_up_yet(tmp_path: Path, pg_home: Path) -> None:
    """Started before PostgreSQL, the API waits (with backoff) and serves once it is up; a
    SIGTERM while it waits stops it at once, not after the wait."""
    # The "postgres" database exists as soon as the server accepts connections.
    pg = LocalPostgres(pg_home / "db", port=free_port(), database="postgres", durable=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = service_env(MNEMO_DATABASE_URL=pg.dsn(), MNEMO_API_PORT=str(port))

    early = Proc("api-early", ["mnemo-api"], env, tmp_path).start()
    wait_for_sync(lambda: "waiting_for_database" in early.log(), what="the API to wait")
    early.signal(signal.SIGTERM)
    started = time.monotonic()
    assert early.wait(10) == 0
    assert time.monotonic() - started < 5
    assert "stopped_before_start" in early.log()

    api = Proc("api", ["mnemo-api"], env, tmp_path).start()
    try:
        wait_for_sync(lambda: "waiting_for_database" in api.log(), what="the API to wait")
        pg.start()
        wait_ready(url, api)
        assert httpx.get(f"{url}/v1/queues", timeout=5).status_code == 200
    finally:
        api.stop()
        pg.stop()
