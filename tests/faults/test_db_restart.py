"""PostgreSQL stops and starts during an ingest: the API answers 503 with Retry-After while
it is down (never 500), /ready goes red then green, workers reconnect and resume, and every
accepted event is embedded exactly once."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from mnemo_core.localpg import LocalPostgres, free_port
from tests.faults.conftest import Stack, size, timer
from tests.helpers import BIN, Proc, migrate_now, service_env, wait_for_sync, wait_ready

pytestmark = pytest.mark.fault


def test_database_restart_during_ingest(tmp_path: Path, pg_home: Path, fault_report: list) -> None:
    pg = LocalPostgres(pg_home / "db", port=free_port())  # durable, like a user's
    dsn = pg.start()
    migrate_now(dsn)
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

    index_jobs: list[str] = []

    def index_a_repository(k: int) -> None:
        """A code index job in flight too: the indexer must ride out the restart."""
        files = [
            {"path": f"pkg{k}/m{i}.py", "content": f"def f{i}(x):\n    return g{i}(x)\n"}
            for i in range(40)
        ]
        r = httpx.post(
            f"{s.url}/v1/code/index", json={"repository": f"r{k}", "files": files}, timeout=30
        )
        assert r.status_code == 202, r.text
        index_jobs.append(r.json()["job_id"])

    try:
        s.start_api()
        s.start("mnemo-embedder")
        s.start("mnemo-indexer")
        poster = threading.Thread(target=post_forever, daemon=True)
        poster.start()
        recover: list[float] = []
        for k in range(restarts):
            wait_for_sync(lambda: len(accepted) > 50, timeout=30, what="ingest under way")
            index_a_repository(k)
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
        for job in s.wait_jobs(index_jobs, timeout=120):
            assert job["status"] == "succeeded", job
            assert job["result"]["files_indexed"] == 40
        assert s.one("SELECT count(*) FROM code_chunks WHERE embedding_status = 'done'") == (
            40 * restarts
        )
        assert s.one("SELECT count(*) FROM code_files WHERE status = 'indexed'") == 40 * restarts
        for q in ("embed", "embed_dlq", "index", "index_dlq"):
            assert s.one(f"SELECT count(*) FROM pgmq.q_{q}") == 0, q
        jobs = s.sql("SELECT status, done, total FROM jobs WHERE kind = 'embed_events'")
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
    """Keys travel in every request of a real API, worker and CLI at debug level; none of
    them ever writes one. Without keys a non-loopback bind is refused, unless told."""
    key, wrong = "k3y-s3cret-value-abc", "wr0ng-k3y-value-xyz"
    s: Stack = stack_factory(
        MNEMO_API_KEYS=f"other-key-000, {key}",
        MNEMO_EMBEDDING_MODEL="hash-384",
        MNEMO_LOG_LEVEL="debug",
    )
    api = s.start_api()
    embedder = s.start("mnemo-embedder")
    with httpx.Client(base_url=s.url) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/v1/queues").status_code == 401
        assert c.get("/v1/queues", headers={"X-API-Key": wrong}).status_code == 401
        assert c.get("/v1/queues", headers={"X-API-Key": key}).status_code == 200
        assert c.get("/ui/data", headers={"X-API-Key": wrong}).status_code == 401
        r = c.post("/v1/events", json={"content": {"text": "x"}}, headers={"X-API-Key": key})
        assert r.status_code == 202
        job_id = r.json()["job_id"]
        assert c.get(f"/v1/jobs/{uuid.uuid4()}", headers={"X-API-Key": key}).status_code == 404
        assert c.post("/v1/events", json={}, headers={"X-API-Key": key}).status_code == 422
    cli = [str(BIN / "mnemo"), "--url", s.url, "--json"]
    ok = subprocess.run(
        [*cli, "jobs", "show", job_id, "--watch"],
        env={**s.env, "MNEMO_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(
        [*cli, "queues"],
        env={**s.env, "MNEMO_API_KEY": wrong},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "X-API-Key" in refused.stdout + refused.stderr
    api.stop()
    embedder.stop()
    logs = [api.log(), embedder.log(), ok.stdout + ok.stderr, refused.stdout + refused.stderr]
    assert "api_ready" in logs[0] and len(logs[0].splitlines()) > 5  # debug lines were written
    for text in logs:
        assert key not in text and wrong not in text and "other-key-000" not in text

    port = free_port()
    out = subprocess.run(
        [str(BIN / "mnemo-api"), "--host", "0.0.0.0", "--port", str(port)],
        env=service_env(MNEMO_DATABASE_URL=s.dsn),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "MNEMO_API_KEYS" in out.stderr
    # MNEMO_ALLOW_INSECURE=1: the operator says something else guards the port.
    insecure = Proc(
        "api-insecure",
        ["mnemo-api", "--host", "0.0.0.0", "--port", str(port)],
        service_env(MNEMO_DATABASE_URL=s.dsn, MNEMO_ALLOW_INSECURE="1"),
        tmp_path,
    ).start()
    try:
        wait_ready(f"http://127.0.0.1:{port}", insecure)
    finally:
        insecure.stop()
