"""Operations against the real database: /metrics follows the system, dead letters are
listed without being consumed and replayed with exactly-once counting, /ui serves its page
and its data."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mnemo_api.answers import DeadLetters, Replayed, Workers
from mnemo_core import db
from mnemo_embedder.model import POISON_MARKER, HashModel
from mnemo_embedder.worker import EmbedWorker
from tests.helpers import wait_for
from tests.integration.test_api import client_for, make_settings


class FixedModel(HashModel):
    """The model after the bug that dead-lettered a message is fixed."""

    def _vector(self, text: str) -> np.ndarray:
        return super()._vector(text.replace(POISON_MARKER, ""))


async def run_worker(dsn: str, model: HashModel | None = None, **kw: object) -> None:
    pool = await db.create_pool(dsn, application_name="test-ops-worker")
    try:
        w = EmbedWorker(
            pool,
            model or HashModel(384),
            make_settings(dsn, **kw),
            worker_id=f"ops-{uuid.uuid4().hex[:6]}",
            once=True,
        )
        await asyncio.wait_for(w.run(), 30)
    finally:
        await pool.close()


async def test_a_workers_batch_is_its_last_one_then_zero_when_idle(
    api: httpx.AsyncClient, dsn: str
) -> None:
    events = [{"content": {"text": f"batch note {i}"}} for i in range(5)]
    assert (await api.post("/v1/events/batch", json={"events": events})).status_code == 202
    pool = await db.create_pool(dsn, application_name="test-ops-worker")
    try:
        w = EmbedWorker(pool, HashModel(384), make_settings(dsn), worker_id="ops-batch", once=True)
        await asyncio.wait_for(w.run(), 30)

        async def batch() -> int:
            [row] = [
                x
                for x in (await api.get("/v1/workers")).json()["workers"]
                if x["id"] == "ops-batch"
            ]
            return row["batch_size"]

        assert await batch() == 5  # its last heartbeat followed the batch
        Workers.model_validate((await api.get("/v1/workers")).json())
        async with pool.acquire() as conn:
            await w._beat(conn)  # a heartbeat with no batch since the last one
        assert await batch() == 0
    finally:
        await pool.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict, name: str, **labels: str) -> float | None:
    return m.get((name, tuple(sorted(labels.items()))))


async def scrape(api: httpx.AsyncClient) -> dict:
    r = await api.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


@pytest.fixture
async def api(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(make_settings(dsn, message_batch=2)):
        yield c


async def test_metrics_follow_the_system(api: httpx.AsyncClient, dsn: str) -> None:
    m = await scrape(api)
    assert value(m, "mnemo_database_up") == 1
    assert value(m, "mnemo_queue_depth", queue="embed") == 0
    assert value(m, "mnemo_workers_live", kind="embedder") == 0
    sent_before = value(m, "mnemo_queue_messages_sent_total", queue="embed")

    events = [{"content": {"text": f"metric note {i}"}} for i in range(5)]
    job_id = (await api.post("/v1/events/batch", json={"events": events})).json()["job_id"]

    async def queued() -> dict | None:
        m = await scrape(api)
        return m if value(m, "mnemo_queue_depth", queue="embed") == 3 else None

    m = await wait_for(queued, timeout=15, what="depth 3 in /metrics")  # 5 ids, 2 per message
    assert value(m, "mnemo_queue_visible", queue="embed") == 3
    assert value(m, "mnemo_queue_messages_sent_total", queue="embed") == (sent_before or 0) + 3
    assert value(m, "mnemo_jobs", kind="embed_events", status="queued") == 1
    assert value(m, "mnemo_queue_oldest_message_age_seconds", queue="embed") is not None

    await run_worker(dsn)

    async def drained() -> dict | None:
        m = await scrape(api)
        done = value(m, "mnemo_worker_items_processed_total", kind="embedder") == 5
        return m if done and value(m, "mnemo_queue_depth", queue="embed") == 0 else None

    m = await wait_for(drained, timeout=15, what="drained figures in /metrics")
    sent = value(m, "mnemo_queue_messages_sent_total", queue="embed")
    assert value(m, "mnemo_queue_messages_completed_total", queue="embed") == sent
    assert value(m, "mnemo_jobs", kind="embed_events", status="succeeded") == 1
    assert value(m, "mnemo_queue_dead_letters", queue="embed") == 0
    assert value(m, "mnemo_worker_items_failed_total", kind="embedder") == 0
    # Three messages were read in one batch of five texts: one observation of 5 items.
    assert value(m, "mnemo_worker_batch_size_count", kind="embedder") == 1
    assert value(m, "mnemo_worker_batch_size_sum", kind="embedder") == 5
    assert value(m, "mnemo_worker_batch_size_bucket", kind="embedder", le="4.0") == 0
    assert value(m, "mnemo_worker_batch_size_bucket", kind="embedder", le="8.0") == 1
    assert value(m, "mnemo_worker_seconds_per_item_count", kind="embedder") == 5
    assert value(m, "mnemo_worker_busy_seconds_total", kind="embedder") > 0  # type: ignore[operator]
    assert value(m, "mnemo_workers_live", kind="indexer") == 0

    # Requests are counted by route template, whatever the id in the path.
    await api.get(f"/v1/jobs/{job_id}")
    await api.get(f"/v1/jobs/{uuid.uuid4()}")
    m = await scrape(api)
    route = "/v1/jobs/{job_id}"
    assert value(m, "mnemo_http_requests_total", method="GET", route=route, status="200") == 1
    assert value(m, "mnemo_http_requests_total", method="GET", route=route, status="404") == 1
    assert (
        value(m, "mnemo_http_requests_total", method="POST", route="/v1/events/batch", status="202")
        == 1
    )
    assert value(m, "mnemo_http_request_duration_seconds_count", method="GET", route=route) == 2
    assert not [k for k in m if k[0] == "mnemo_http_requests_total" and job_id in str(k)]
    # The single-event fast path and Starlette's own routes are labelled by their paths too;
    # "unrouted" is only for what matched nothing.
    assert (await api.post("/v1/events", json={"content": {"text": "fast"}})).status_code == 202
    assert (await api.post("/v1/events", json={"content": "slow"})).status_code == 422
    assert (await api.get("/openapi.json")).status_code == 200
    assert (await api.get(f"/v1/nothing/{job_id}")).status_code == 404
    m = await scrape(api)
    for status, n in (("202", 1), ("422", 1)):
        assert (
            value(m, "mnemo_http_requests_total", method="POST", route="/v1/events", status=status)
            == n
        )
    assert value(m, "mnemo_http_requests_total", method="GET", route="/openapi.json", status="200")
    assert value(m, "mnemo_http_requests_total", method="GET", route="unrouted", status="404") == 1
    assert not [k for k in m if k[0] == "mnemo_http_requests_total" and job_id in str(k)]


async def test_keys_guard_data_but_not_the_page_shell(dsn: str) -> None:
    async for api in client_for(make_settings(dsn, api_keys="k1", metrics_public=False)):
        assert (await api.get("/metrics")).status_code == 401
        assert (await api.get("/metrics", headers={"X-API-Key": "k1"})).status_code == 200
        page = await api.get("/ui")
        assert page.status_code == 200 and "MnemoLite operations" in page.text
        assert "const KEYS_REQUIRED = true" in page.text
        assert (await api.get("/ui/data")).status_code == 401
        assert (await api.get("/v1/dlq/embed")).status_code == 401
        r = await api.get("/ui/data", headers={"X-API-Key": "k1"})
        assert r.status_code == 200
        # Refused requests count too, under a fixed label (never the raw path).
        m = samples((await api.get("/metrics", headers={"X-API-Key": "k1"})).text)
        assert value(m, "mnemo_http_requests_total", method="GET", route="unrouted", status="401")
        assert value(m, "mnemo_http_requests_total", method="GET", route="/ui/data", status="200")
    async for api in client_for(make_settings(dsn, api_keys="k1")):
        assert (await api.get("/metrics")).status_code == 200  # public by default


async def test_ui_data(api: httpx.AsyncClient, dsn: str) -> None:
    page = await api.get("/ui")
    assert "const KEYS_REQUIRED = false" in page.text
    # Only its own inline script and style run: they carry this answer's nonce.
    csp = page.headers["content-security-policy"]
    [nonce] = re.findall(r"script-src 'nonce-([^']+)'", csp)
    assert f"style-src 'nonce-{nonce}'" in csp and "frame-ancestors 'none'" in csp
    assert page.text.count(f'nonce="{nonce}"') == 2
    assert page.text.count("<script") == page.text.count("<style") == 1
    assert page.headers["x-frame-options"] == "DENY"
    assert nonce not in (await api.get("/ui")).headers["content-security-policy"]
    await api.post("/v1/events", json={"content": {"text": "ui note"}})
    await run_worker(dsn)

    async def data() -> dict | None:
        # Jobs are read live, workers from the sampled snapshot: wait for both to show it.
        d = (await api.get("/ui/data")).json()
        counted = d["workers"] and d["workers"][0]["processed"] == 1
        return d if counted and d["jobs"][0]["status"] == "succeeded" else None

    d = await wait_for(data, timeout=15, what="a worker and a finished job in /ui/data")
    assert {q["queue"] for q in d["queues"]} >= {"embed", "embed_query", "index"}
    assert len(d["history"]["t"]) >= 1
    assert set(d["history"]["queues"]["embed"]) == {"depth", "visible", "in_flight"}
    w = d["workers"][0]
    assert w["kind"] == "embedder" and w["processed"] == 1 and w["heartbeat_age_s"] >= 0
    assert d["jobs"][0]["progress"] == {"total": 1, "done": 1, "failed": 0}


async def job(api: httpx.AsyncClient, job_id: str) -> dict:
    return (await api.get(f"/v1/jobs/{job_id}")).json()


async def db_fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await db.connect(dsn, application_name="test-ops")  # with the jsonb codec
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def test_dead_letters_listed_then_replayed_exactly_once(
    api: httpx.AsyncClient, dsn: str
) -> None:
    texts = ["alpha note", "beta note", f"gamma {POISON_MARKER} note", "delta note"]
    events = [{"content": {"text": t}} for t in texts]
    r = await api.post("/v1/events/batch", json={"events": events})
    job_id = r.json()["job_id"]
    # [alpha, beta] done; of [gamma, delta] delta is written, the message dead-lettered with
    # gamma failed alone.
    await run_worker(dsn, max_attempts=1)
    j = await job(api, job_id)
    assert j["status"] == "failed" and j["progress"] == {"total": 4, "done": 3, "failed": 1}
    assert len(j["failures"]) == 1

    listed = (await api.get("/v1/dlq/embed_dlq")).json()
    again = (await api.get("/v1/dlq/embed")).json()  # the source queue's name works too
    assert listed == again, "listing consumed or changed something"
    assert listed["queue"] == "embed_dlq" and listed["source"] == "embed"
    DeadLetters.model_validate(listed)  # as the OpenAPI document says
    [letter] = listed["messages"]
    assert letter["job_id"] == job_id and letter["items"] == 2 and letter["kind"] == "event"
    assert "ValueError" in letter["error"] or "poison" in letter["error"]
    assert (await api.get("/v1/dlq/index_dlq")).json()["messages"] == []
    assert (await api.get("/v1/dlq/nope")).status_code == 404
    missing = await api.post("/v1/dlq/embed/replay", json={"ids": [999999]})
    assert missing.json()["not_found"] == [999999] and missing.json()["replayed"] == 0
    bad = await api.post("/v1/dlq/embed/replay", json={"ids": "all"})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("body.ids")
    for ids in ([True], ["1"], [1.0]):  # true replayed message 1
        bad = await api.post("/v1/dlq/embed/replay", json={"ids": ids})
        assert bad.status_code == 422 and bad.json()["detail"].startswith("body.ids.0"), ids

    r = await api.post("/v1/dlq/embed_dlq/replay", json={"ids": [letter["id"]]})
    assert r.status_code == 200, r.text
    assert r.json()["replayed"] == 1 and r.json()["requeued_items"] == 1
    Replayed.model_validate(r.json())
    j = await job(api, job_id)
    assert j["status"] == "running" and j["progress"] == {"total": 4, "done": 3, "failed": 0}
    assert j["error"] is None and j["failures"] == []
    assert (await api.get("/v1/dlq/embed")).json()["messages"] == []
    assert (await api.post("/v1/dlq/embed/replay")).json()["replayed"] == 0
    [queued] = await db_fetch(dsn, "SELECT message FROM pgmq.q_embed")
    assert queued["message"] == letter["message"]

    await run_worker(dsn, FixedModel(384), max_attempts=1)
    j = await job(api, job_id)
    assert j["status"] == "succeeded" and j["progress"] == {"total": 4, "done": 4, "failed": 0}
    # The same message once more (a duplicate replay): nothing moves, nothing counts twice.
    await db_fetch(dsn, "SELECT pgmq.send('embed', $1::jsonb)", letter["message"])
    await run_worker(dsn, FixedModel(384))
    assert (await job(api, job_id))["progress"] == {"total": 4, "done": 4, "failed": 0}
    rows = await db_fetch(dsn, "SELECT embedding_status FROM events")
    assert sorted(r["embedding_status"] for r in rows) == ["done"] * 4


async def test_replay_after_a_job_retry_and_of_a_cancelled_job(
    api: httpx.AsyncClient, dsn: str
) -> None:
    first = (await api.post("/v1/events", json={"content": {"text": POISON_MARKER}})).json()
    await run_worker(dsn, max_attempts=1)
    assert (await job(api, first["job_id"]))["status"] == "failed"
    # The job is retried through the jobs API first: its item is pending again, then done.
    assert (await api.post(f"/v1/jobs/{first['job_id']}/retry")).json()["requeued"] == 1
    await run_worker(dsn, FixedModel(384))
    assert (await job(api, first["job_id"]))["progress"] == {"total": 1, "done": 1, "failed": 0}
    # Replaying the old dead letter afterwards moves nothing and counts nothing.
    r = (await api.post("/v1/dlq/embed/replay")).json()
    assert r["replayed"] == 1 and r["requeued_items"] == 0
    await run_worker(dsn, FixedModel(384))
    j = await job(api, first["job_id"])
    assert j["status"] == "succeeded" and j["progress"] == {"total": 1, "done": 1, "failed": 0}

    # A cancelled job's dead letters stay where they are: retrying the job is the way.
    events = [{"content": {"text": t}} for t in (POISON_MARKER, "x", "later one", "later two")]
    second = (await api.post("/v1/events/batch", json={"events": events})).json()
    await db_fetch(  # only the first message is read: the second waits in the queue
        dsn, "SELECT 1 FROM pgmq.set_vt('embed', (SELECT max(msg_id) FROM pgmq.q_embed), 300)"
    )
    await run_worker(dsn, max_attempts=1)
    assert (await api.post(f"/v1/jobs/{second['job_id']}/cancel")).status_code == 200
    r = (await api.post("/v1/dlq/embed/replay")).json()
    assert r["replayed"] == 0 and len(r["skipped"]) == 1
    assert "cancelled" in r["skipped"][0]["reason"]
    Replayed.model_validate(r)
    assert len((await api.get("/v1/dlq/embed")).json()["messages"]) == 1
    # Retried, it is running again, not queued: some of its items are done.
    r = (await api.post(f"/v1/jobs/{second['job_id']}/retry")).json()
    assert r["status"] == "running" and r["progress"]["done"] > 0, r
