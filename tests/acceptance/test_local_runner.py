"""`mnemo up` (what `make run` runs): embedded PostgreSQL, migrations, the API and an
embedder as supervised children; Ctrl-C stops everything; a second start keeps the data."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from mnemo_core.localpg import free_port, port_in_use
from tests.helpers import Proc, service_env, wait_for_sync, wait_ready

pytestmark = pytest.mark.acceptance


def start_up(tmp: Path, api_port: int, db_port: int, name: str) -> Proc:
    env = service_env(
        MNEMO_DATA_DIR=str(tmp / "data"),
        MNEMO_API_PORT=str(api_port),
        MNEMO_DB_PORT=str(db_port),
        MNEMO_EMBEDDING_MODEL="hash-384",
        MNEMO_HEARTBEAT_S="0.5",
        MNEMO_WORKER_DEAD_AFTER_S="3",
    )
    return Proc(name, ["mnemo", "up"], env, tmp).start()


def test_up_serves_supervises_stops_and_keeps_data(tmp_path: Path) -> None:
    api_port, db_port = free_port(), free_port()
    url = f"http://127.0.0.1:{api_port}"
    up = start_up(tmp_path, api_port, db_port, "up-1")
    try:
        wait_ready(url, up, timeout=90)
        r = httpx.post(f"{url}/v1/events", json={"content": {"text": "remember the milk"}})
        assert r.status_code == 202
        event_id, job_id = r.json()["event_id"], r.json()["job_id"]
        wait_for_sync(
            lambda: httpx.get(f"{url}/v1/jobs/{job_id}").json()["status"] == "succeeded",
            timeout=60,
            what="the job",
        )

        # A worker that dies is restarted by the runner.
        workers = httpx.get(f"{url}/v1/workers").json()["workers"]
        first = [w for w in workers if w["alive"] and w["kind"] == "embedder"]
        assert len(first) == 1
        import os

        os.kill(first[0]["pid"], signal.SIGKILL)

        def replaced() -> bool:
            ws = httpx.get(f"{url}/v1/workers").json()["workers"]
            return any(w["alive"] and w["pid"] != first[0]["pid"] for w in ws)

        wait_for_sync(replaced, timeout=60, what="a restarted embedder")
        assert "child_exited" in up.log()
        r = httpx.get(f"{url}/v1/search", params={"q": "milk", "limit": 1})
        assert r.status_code == 200 and r.json()["results"][0]["id"] == event_id
    finally:
        up.signal(signal.SIGINT)
        code = up.wait(60)
    assert code == 0, up.log()[-3000:]
    assert not port_in_use(api_port) and not port_in_use(db_port)

    again = start_up(tmp_path, api_port, db_port, "up-2")
    try:
        wait_ready(url, again, timeout=90)
        r = httpx.get(f"{url}/v1/events/{event_id}")
        assert r.status_code == 200 and r.json()["content"] == {"text": "remember the milk"}
    finally:
        again.signal(signal.SIGTERM)
        assert again.wait(60) == 0
    assert not port_in_use(db_port)
