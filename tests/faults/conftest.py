"""Fault tests: real processes and a real database, broken on purpose. Short versions run
in `make test`; `make soak` (MNEMO_SOAK=1) runs the long ones. Each test records what it
injected and what it found in tests/artifacts/faults.json (the table in the closing note)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from mnemo_core.localpg import LocalPostgres, free_port
from tests.helpers import Proc, cloned_database, service_env, wait_for_sync, wait_ready

SOAK = os.environ.get("MNEMO_SOAK") == "1"


def size(short: int, soak: int) -> int:
    return soak if SOAK else short


_REPORT: list[dict[str, Any]] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long versions outgrow the global per-test timeout (300 s); a soak test gets 30
    minutes, still bounded."""
    if SOAK:
        here = Path(__file__).parent
        for item in items:
            if here in item.path.parents:
                item.add_marker(pytest.mark.timeout(1800))


@pytest.fixture(scope="session")
def fault_report(artifacts: Path) -> Iterator[list[dict[str, Any]]]:
    yield _REPORT
    name = "faults-soak.json" if SOAK else "faults.json"
    (artifacts / name).write_text(json.dumps(_REPORT, indent=2))


class Stack:
    """mnemo-api plus workers as real processes against their own database."""

    def __init__(self, dsn: str, logs: Path, **env: str) -> None:
        self.dsn = dsn
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = service_env(
            MNEMO_DATABASE_URL=dsn,
            MNEMO_API_PORT=str(self.port),
            MNEMO_HEARTBEAT_S="1",
            MNEMO_TORCH_THREADS="1",
            **env,
        )
        self.procs: list[Proc] = []
        self.api: Proc | None = None

    def start_api(self) -> Proc:
        self.api = self.start("mnemo-api")
        wait_ready(self.url, self.api)
        return self.api

    def start(self, command: str, **env: str) -> Proc:
        name = f"{command}-{len(self.procs)}"
        p = Proc(name, [command], {**self.env, **env}, self.logs).start()
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            p.stop()

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.dsn)
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    def one(self, query: str, *args: Any) -> Any:
        return self.sql(query, *args)[0][0]

    def job(self, job_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.url}/v1/jobs/{job_id}", timeout=30).json()

    def wait_jobs(self, job_ids: list[str], timeout: float = 300) -> list[dict[str, Any]]:
        def done() -> list[dict[str, Any]] | None:
            jobs = [self.job(j) for j in job_ids]
            finished = ("succeeded", "failed", "cancelled")
            return jobs if all(j["status"] in finished for j in jobs) else None

        return wait_for_sync(done, timeout=timeout, interval=0.3, what="jobs to finish")

    def post_batches(self, n: int, prefix: str, per_batch: int = 500) -> list[str]:
        job_ids = []
        with self.http() as c:
            for start in range(0, n, per_batch):
                events = [
                    {
                        "content": {
                            "text": f"{prefix} note {i}: {uuid.uuid4().hex[:8]} "
                            f"about topic {i % 37}"
                        }
                    }
                    for i in range(start, min(n, start + per_batch))
                ]
                r = c.post("/v1/events/batch", json={"events": events})
                assert r.status_code == 202, r.text
                job_ids.append(r.json()["job_id"])
        return job_ids


@pytest.fixture
def fresh_db(pg: LocalPostgres) -> Iterator[str]:
    with cloned_database(pg, "fault") as dsn:
        yield dsn


@pytest.fixture
def stack_factory(fresh_db: str, tmp_path: Path) -> Iterator[Any]:
    made: list[Stack] = []

    def make(**env: str) -> Stack:
        s = Stack(fresh_db, tmp_path, **env)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop_all()


def timer() -> Any:
    start = time.monotonic()
    return lambda: round(time.monotonic() - start, 2)
