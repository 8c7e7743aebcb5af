"""PostgreSQL stops and starts during an ingest: the API answers 503 with Retry-After while
it is down (never 500), /ready goes red then green, workers reconnect and resume, and every
accepted event is embedded exactly once."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mnemo_core import db, migrate
from mnemo_core.localpg import LocalPostgres, free_port
from tests.faults.conftest import Stack, size, timer
from tests.helpers import wait_for_sync

pytestmark = pytest.mark.fault


def test_database_restart_during_ingest(tmp_path: Path, fault_report: list) -> None:
    pg = LocalPostgres(tmp_path / "db", port=free_port())  # durable, like a user's
    dsn = pg.start()

    async def prepare() -> None:
        conn = await db.connect(dsn, application_name="test")
        await migrate.migrate(conn, embedding_dim=384)
        await conn.close()

    asyncio.run(prepare())
    s = Stack(dsn, tmp_path, MNEMO_EMBEDDING_MODEL="hash-384", MNEMO_VISIBILITY_TIMEOUT_S="5")
    restarts = size(1, 3)
    accepted: list[str] = []
    statuses: dict[int, int] = {}
    stop = threading.Event()

    def post_forever() -> None:
        with httpx.Client(base_url=s.url, timeout=10) as c:
            i = 0
            while not stop.is_set():
                try:
                    r = c.post("/v1/events", json={"content": {"text": f"ingest {i}"}})
                except httpx.HTTPError:
                    statuses[-1] = statuses.get(-1, 0) + 1
                    continue
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 202:
                    accepted.append(r.json()["event_id"])
                else:
                    assert r.headers.get("retry-after"), r.text
                i += 1

    try:
        s.start_api()
        s.start("mnemo-embedder")
        poster = threading.Thread(target=post_forever, daemon=True)
        poster.start()
        recover: list[float] = []
        for _ in range(restarts):
            wait_for_sync(lambda: len(accepted) > 50, timeout=30, what="ingest under way")
            pg.stop()
            red = httpx.get(f"{s.url}/ready", timeout=10)
            assert red.status_code == 503 and red.headers["retry-after"]
            time.sleep(1.0)  # the outage itself: posts keep coming and get 503s
            clock = timer()
            pg.start()
            wait_for_sync(
                lambda: httpx.get(f"{s.url}/ready", timeout=10).status_code == 200,
                timeout=60,
                what="/ready to recover",
            )
            n = len(accepted)
            wait_for_sync(
                lambda m=n: len(accepted) > m + 20, timeout=60, what="writes to be accepted again"
            )
            recover.append(clock())
        stop.set()
        poster.join(30)
        assert 500 not in statuses, statuses
        assert statuses.get(503, 0) > 0, statuses

        def all_done() -> bool:
            return s.one("SELECT count(*) FROM events WHERE embedding_status = 'done'") == len(
                accepted
            )

        wait_for_sync(all_done, timeout=120, what="every accepted event to be embedded")
        rows = s.sql("SELECT id::text FROM events")
        assert sorted(r["id"] for r in rows) == sorted(accepted)  # nothing lost, nothing extra
        jobs = s.sql("SELECT status, done, total FROM jobs")
        assert all(j["status"] == "succeeded" and j["done"] == j["total"] == 1 for j in jobs)
        fault_report.append(
            {
                "fault": "PostgreSQL restart during ingest",
                "injected": restarts,
                "items": len(accepted),
                "in_flight": None,
                "lost": 0,
                "duplicates": sum(j["done"] for j in jobs) - len(accepted),
                "recovery_s": recover,
                "answers": {str(k): v for k, v in statuses.items()},
            }
        )
    finally:
        stop.set()
        s.stop_all()
        pg.stop()


def test_keys_stay_out_of_logs_and_open_bind_is_refused(stack_factory: Any, tmp_path: Path) -> None:
    key, wrong = "k3y-s3cret-value-abc", "wr0ng-k3y-value-xyz"
    s: Stack = stack_factory(MNEMO_API_KEYS=key, MNEMO_EMBEDDING_MODEL="hash-384")
    api = s.start_api()
    with httpx.Client(base_url=s.url) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/v1/queues").status_code == 401
        assert c.get("/v1/queues", headers={"X-API-Key": wrong}).status_code == 401
        assert c.get("/v1/queues", headers={"X-API-Key": key}).status_code == 200
        assert (
            c.post(
                "/v1/events", json={"content": {"text": "x"}}, headers={"X-API-Key": key}
            ).status_code
            == 202
        )
    api.stop()
    text = api.log()
    assert "401" in text or "v1/queues" in text or text  # the log has lines
    assert key not in text and wrong not in text
    import subprocess

    from tests.helpers import BIN, service_env

    out = subprocess.run(
        [str(BIN / "mnemo-api"), "--host", "0.0.0.0", "--port", "1"],
        env=service_env(MNEMO_DATABASE_URL=s.dsn),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "MNEMO_API_KEYS" in out.stderr
