"""A model of 2,000 dimensions (the most pgvector's HNSW index takes, and what the settings
allow) end to end through real mnemo-api and mnemo-embedder processes: text search works
(its query vector no longer rides in a NOTIFY payload, which holds 8,000 bytes), and a query
the model refuses is answered with its error while the embedder goes on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from mnemo_core import db, migrate
from mnemo_core.localpg import LocalPostgres, free_port
from mnemo_embedder.model import POISON_MARKER, HashModel
from tests.acceptance.test_spine import wait_jobs
from tests.helpers import Proc, service_env, wait_ready

pytestmark = pytest.mark.acceptance

DIM = 2000


@pytest.fixture(scope="module")
def stack(pg: LocalPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    name = f"acc_dim_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        admin = await asyncpg.connect(pg.dsn("postgres"))
        await admin.execute(f"CREATE DATABASE {name}")
        await admin.close()
        conn = await db.connect(pg.dsn(name), application_name="tests:dim")
        await migrate.migrate(conn, embedding_dim=DIM)
        await conn.close()

    asyncio.run(create())
    logs = tmp_path_factory.mktemp("dim-logs")
    port = free_port()
    env = service_env(
        MNEMO_DATABASE_URL=pg.dsn(name),
        MNEMO_API_PORT=str(port),
        MNEMO_EMBEDDING_MODEL=f"hash-{DIM}",
        MNEMO_EMBEDDING_DIM=str(DIM),
        MNEMO_HEARTBEAT_S="0.5",
    )
    url = f"http://127.0.0.1:{port}"
    api = Proc("api", ["mnemo-api"], env, logs).start()
    embedder = Proc("embedder", ["mnemo-embedder"], env, logs).start()
    wait_ready(url, api)
    yield {"url": url, "api": api, "embedder": embedder}
    for p in (api, embedder):
        p.stop()


TOPICS = [
    "the spare key is under the blue flowerpot",
    "rotate the database password every quarter",
    "the cat's vaccination is due in March",
    "Kubernetes pods restart when they run out of memory",
    "book the train to Lisbon for the conference",
    "water the tomatoes every morning",
]
TEXTS = [f"note {i}: {t}" for i, t in enumerate(TOPICS)]


def test_text_search_at_2000_dimensions(stack: dict) -> None:
    url = stack["url"]
    r = httpx.post(
        f"{url}/v1/events/batch", json={"events": [{"content": {"text": t}} for t in TEXTS]}
    )
    assert r.status_code == 202, r.text
    ids = dict(zip(TEXTS, r.json()["event_ids"], strict=True))
    assert wait_jobs(url, [r.json()["job_id"]])[0]["status"] == "succeeded"
    for text, event_id in ids.items():
        r = httpx.get(f"{url}/v1/search", params={"q": text, "limit": 1}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["id"] == event_id
    # The same vector sent by the client finds the same event.
    vec = HashModel(DIM).encode([TEXTS[0]])[0]
    r = httpx.post(f"{url}/v1/search", json={"vector": vec.tolist(), "limit": 1}, timeout=30)
    assert r.status_code == 200 and r.json()["results"][0]["id"] == ids[TEXTS[0]]


def test_a_refused_query_gets_its_error_and_the_embedder_goes_on(stack: dict) -> None:
    url, embedder = stack["url"], stack["embedder"]
    pid = embedder.pid
    r = httpx.get(f"{url}/v1/search", params={"q": f"bad {POISON_MARKER} query"}, timeout=30)
    assert r.status_code == 503
    # An answer with the reason, not a timeout waiting for one.
    assert "could not embed the query" in r.json()["detail"]
    assert "poison marker" in r.json()["detail"]
    r = httpx.get(f"{url}/v1/search", params={"q": TEXTS[1], "limit": 1}, timeout=30)
    assert r.status_code == 200 and r.json()["results"]
    assert embedder.proc is not None and embedder.proc.poll() is None and embedder.pid == pid
