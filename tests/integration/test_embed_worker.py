"""The embed worker in-process, against the real database, with the hashing test model."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import numpy as np
import pytest

from mnemo_core import events, jobs, queue
from mnemo_core.errors import Conflict
from mnemo_core.settings import Settings
from mnemo_embedder.model import POISON_MARKER, HashModel
from mnemo_embedder.worker import EmbedWorker

MODEL = HashModel(384)


def settings(**kw: object) -> Settings:
    base: dict[str, object] = {
        "embedding_model": MODEL.name,
        "max_attempts": 3,
        "visibility_timeout_s": 30,
        "heartbeat_s": 0.2,
    }
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


async def ingest(pool: asyncpg.Pool, texts: list[str | None], **kw: object) -> events.Ingested:
    items = [
        events.NewEvent({"text": t} if t is not None else {"kind": "ping"}, {}, None, None)
        for t in texts
    ]
    async with pool.acquire() as conn, conn.transaction():
        return await events.ingest(conn, items, model=MODEL.name, message_batch=8, **kw)


async def drain(pool: asyncpg.Pool, **kw: object) -> None:
    w = EmbedWorker(
        pool, MODEL, settings(**kw), worker_id=f"test-{uuid.uuid4().hex[:6]}", once=True
    )
    await asyncio.wait_for(w.run(), 60)


async def job(pool: asyncpg.Pool, job_id: uuid.UUID | None) -> dict:
    assert job_id is not None
    async with pool.acquire() as conn:
        return await jobs.get(conn, job_id)


async def test_batch_is_embedded_and_job_succeeds(pool: asyncpg.Pool) -> None:
    done = await ingest(pool, [f"note number {i}" for i in range(20)] + [None])
    assert done.queued == 20
    await drain(pool)
    j = await job(pool, done.job_id)
    assert j["status"] == "succeeded"
    assert j["progress"] == {"total": 20, "done": 20, "failed": 0}
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT embedding_status, embedding, embedding_model FROM events")
        workers = await conn.fetch("SELECT * FROM workers")
    statuses = sorted(r["embedding_status"] for r in rows)
    assert statuses == ["done"] * 20 + ["skipped"]
    for r in rows:
        if r["embedding_status"] == "done":
            assert r["embedding_model"] == MODEL.name
            assert abs(float(np.linalg.norm(r["embedding"].to_numpy())) - 1.0) < 1e-4
    assert workers[0]["processed"] == 20 and workers[0]["stopped_at"] is not None


async def test_redelivery_counts_once(pool: asyncpg.Pool) -> None:
    """The same messages delivered twice (first ack lost) leave one result and one count."""
    done = await ingest(pool, [f"text {i}" for i in range(10)])
    async with pool.acquire() as conn:
        original = await conn.fetch("SELECT message FROM pgmq.q_embed ORDER BY msg_id")
    await drain(pool)
    async with pool.acquire() as conn:
        await queue.send_many(conn, queue.EMBED, [r["message"] for r in original])
    await drain(pool)
    j = await job(pool, done.job_id)
    assert j["progress"] == {"total": 10, "done": 10, "failed": 0}
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pgmq.q_embed") == 0
        assert await conn.fetchval("SELECT count(*) FROM events") == 10


async def test_concurrent_duplicate_delivery_counts_once(pool: asyncpg.Pool) -> None:
    done = await ingest(pool, [f"text {i}" for i in range(30)])
    async with pool.acquire() as conn:
        original = await conn.fetch("SELECT message FROM pgmq.q_embed ORDER BY msg_id")
        await queue.send_many(conn, queue.EMBED, [r["message"] for r in original])
    await asyncio.gather(drain(pool), drain(pool))
    j = await job(pool, done.job_id)
    assert j["progress"] == {"total": 30, "done": 30, "failed": 0}
    assert j["status"] == "succeeded"


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "event", "ids": ["not-a-uuid"]},
        {"kind": "mystery", "ids": [1]},
        {"ids": []},
        "just a string",
        [1, 2, 3],
    ],
)
async def test_poison_message_goes_to_dlq_and_queue_keeps_flowing(
    pool: asyncpg.Pool, body: object
) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SELECT pgmq.send('embed', $1::jsonb)", body)
    done = await ingest(pool, ["after the poison"])
    await drain(pool)
    assert (await job(pool, done.job_id))["status"] == "succeeded"
    async with pool.acquire() as conn:
        dead = await conn.fetch("SELECT message FROM pgmq.q_embed_dlq")
        assert await conn.fetchval("SELECT count(*) FROM pgmq.q_embed") == 0
    assert len(dead) == 1
    assert dead[0]["message"]["message"] == body
    assert "poison" in dead[0]["message"]["error"]


async def test_item_that_breaks_the_model_fails_alone(pool: asyncpg.Pool) -> None:
    """A text that makes the model raise is retried, then dead-lettered with its error;
    its job shows the failed item; the other messages succeed at once."""
    bad = await ingest(pool, [f"bad {POISON_MARKER}"])
    good = await ingest(pool, ["good one", "good two"])
    for _ in range(3):
        await drain(pool)
        async with pool.acquire() as conn:  # skip the backoff: make it visible now
            await conn.execute("UPDATE pgmq.q_embed SET vt = now()")
    assert (await job(pool, good.job_id))["status"] == "succeeded"
    j = await job(pool, bad.job_id)
    assert j["status"] == "failed"
    assert j["progress"] == {"total": 1, "done": 0, "failed": 1}
    assert j["attempts"] == 3
    assert "poison marker" in j["error"]
    assert j["failures"][0]["item_id"] == str(bad.event_ids[0])
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pgmq.q_embed_dlq") == 1
        assert await conn.fetchval("SELECT count(*) FROM pgmq.q_embed") == 0


async def test_message_read_too_often_is_dead_lettered(pool: asyncpg.Pool) -> None:
    done = await ingest(pool, ["crashed its workers"])
    async with pool.acquire() as conn:
        await conn.execute("UPDATE pgmq.q_embed SET read_ct = 3")  # 3 deliveries crashed
    await drain(pool)
    j = await job(pool, done.job_id)
    assert j["status"] == "failed" and j["progress"]["failed"] == 1
    assert "delivered 4 times" in j["error"]


async def test_cancel_stops_remaining_items_and_retry_requeues(pool: asyncpg.Pool) -> None:
    done = await ingest(pool, [f"t{i}" for i in range(12)])
    async with pool.acquire() as conn:
        cancelled = await jobs.cancel(conn, done.job_id)  # type: ignore[arg-type]
    assert cancelled["status"] == "cancelled"
    await drain(pool)
    j = await job(pool, done.job_id)
    assert j["status"] == "cancelled" and j["progress"]["done"] == 0
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM events WHERE embedding_status = 'cancelled'")
            == 12
        )
        async with conn.transaction():
            again = await jobs.retry(conn, done.job_id, message_batch=8)  # type: ignore[arg-type]
    assert again["requeued"] == 12 and again["status"] == "queued"
    await drain(pool)
    j = await job(pool, done.job_id)
    assert j["status"] == "succeeded" and j["progress"]["done"] == 12


async def test_a_write_after_a_cancel_moves_no_time_backwards(pool: asyncpg.Pool) -> None:
    """A worker's transaction that began before the cancel and writes after it (the batch it
    already held): the job stays never started, and updated_at does not go back to that
    transaction's start."""
    done = await ingest(pool, ["a", "b"])
    async with pool.acquire() as worker, pool.acquire() as user:
        async with worker.transaction():
            await worker.execute("SELECT now()")  # the worker's transaction has begun
            await asyncio.sleep(0.05)
            cancelled = await jobs.cancel(user, done.job_id)  # type: ignore[arg-type]
            await jobs.progress(worker, done.job_id, done=1, attempts=1)  # type: ignore[arg-type]
    j = await job(pool, done.job_id)
    assert j["status"] == "cancelled" and j["progress"]["done"] == 1
    assert j["started_at"] is None
    assert j["finished_at"] == cancelled["finished_at"]
    assert j["updated_at"] >= cancelled["updated_at"]


async def test_retry_of_a_job_whose_failed_items_are_gone_conflicts(pool: asyncpg.Pool) -> None:
    """It re-opened and settled as failed again, its error gone; now a 409 changes nothing."""
    bad = await ingest(pool, [f"bad {POISON_MARKER}", f"worse {POISON_MARKER}"])
    for _ in range(3):
        await drain(pool)
        async with pool.acquire() as conn:  # skip the backoff: make it visible now
            await conn.execute("UPDATE pgmq.q_embed SET vt = now()")
    before = await job(pool, bad.job_id)
    assert before["status"] == "failed" and before["error"]
    async with pool.acquire() as conn:
        for event_id in bad.event_ids:
            await events.delete(conn, event_id)
    with pytest.raises(Conflict, match="nothing to retry: its failed items no longer exist"):
        async with pool.acquire() as conn, conn.transaction():
            await jobs.retry(conn, bad.job_id, message_batch=8)  # type: ignore[arg-type]
    after = await job(pool, bad.job_id)
    assert after["status"] == "failed" and after["error"] == before["error"]
    assert len(after["failures"]) == 2


async def test_retry_requeues_only_failed_items(pool: asyncpg.Pool) -> None:
    done = await ingest(
        pool,
        ["fine", f"broken {POISON_MARKER}"],
    )
    async with pool.acquire() as conn:
        await conn.execute("UPDATE pgmq.q_embed SET read_ct = 2")
    # message_batch=8 put both items in one message: its third delivery is the last, the
    # good item is written, the broken one fails and the message is dead-lettered.
    await drain(pool)
    j = await job(pool, done.job_id)
    assert j["status"] == "failed"
    assert j["progress"] == {"total": 2, "done": 1, "failed": 1}
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE events SET content = $1 WHERE content->>'text' LIKE 'broken%'",
            {"text": "repaired"},
        )
        async with conn.transaction():
            again = await jobs.retry(conn, done.job_id, message_batch=8)  # type: ignore[arg-type]
    assert again["requeued"] == 1  # only the item that failed
    await drain(pool)
    j = await job(pool, done.job_id)
    assert j["status"] == "succeeded"
    assert j["progress"] == {"total": 2, "done": 2, "failed": 0}


async def test_one_bad_item_in_a_message_fails_alone(pool: asyncpg.Pool) -> None:
    """A message of eight items, one of which makes the model raise: the seven are written
    on the first delivery; the bad one is retried with the message, then fails alone with
    its own error, and the dead letter says how many of the message's items failed."""
    texts = [f"neighbour {i}" for i in range(7)]
    texts.insert(3, f"the bad one {POISON_MARKER}")
    done = await ingest(pool, texts)  # message_batch=8: one message
    await drain(pool)
    j = await job(pool, done.job_id)
    assert j["status"] == "running" and j["progress"] == {"total": 8, "done": 7, "failed": 0}
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pgmq.q_embed") == 1  # back, later
    for _ in range(2):
        async with pool.acquire() as conn:  # skip the backoff: make it visible now
            await conn.execute("UPDATE pgmq.q_embed SET vt = now()")
        await drain(pool)
    j = await job(pool, done.job_id)
    assert j["status"] == "failed" and j["attempts"] == 3
    assert j["progress"] == {"total": 8, "done": 7, "failed": 1}
    assert [f["item_id"] for f in j["failures"]] == [str(done.event_ids[3])]
    assert "poison marker" in j["failures"][0]["error"]
    async with pool.acquire() as conn:
        statuses = await conn.fetch(
            "SELECT id, embedding_status FROM events WHERE id = ANY($1::uuid[])", done.event_ids
        )
        dead = await conn.fetch("SELECT message FROM pgmq.q_embed_dlq")
        assert await conn.fetchval("SELECT count(*) FROM pgmq.q_embed") == 0
    by_id = {r["id"]: r["embedding_status"] for r in statuses}
    assert [by_id[i] for i in done.event_ids] == ["done"] * 3 + ["failed"] + ["done"] * 4
    assert len(dead) == 1 and "(1 of 8 items)" in dead[0]["message"]["error"]


async def test_retry_of_succeeded_job_conflicts(pool: asyncpg.Pool) -> None:
    from mnemo_core.errors import Conflict

    done = await ingest(pool, ["x"])
    await drain(pool)
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(Conflict):
            await jobs.retry(conn, done.job_id, message_batch=8)  # type: ignore[arg-type]


async def test_deleting_a_pending_event_settles_its_job(pool: asyncpg.Pool) -> None:
    done = await ingest(pool, ["a", "b"])
    async with pool.acquire() as conn, conn.transaction():
        await events.delete(conn, done.event_ids[0])
    await drain(pool)
    j = await job(pool, done.job_id)
    assert j["status"] == "succeeded" and j["progress"] == {"total": 1, "done": 1, "failed": 0}


async def test_unknown_ids_from_elsewhere_are_poison_but_stale_ids_are_not(
    pool: asyncpg.Pool,
) -> None:
    stranger = {"kind": "event", "ids": [str(uuid.uuid4())]}  # no job, no such event
    done = await ingest(pool, ["soon deleted"])
    async with pool.acquire() as conn:
        await conn.execute("SELECT pgmq.send('embed', $1::jsonb)", stranger)
        async with conn.transaction():
            await events.delete(conn, done.event_ids[0])  # its message is now stale
    await drain(pool)
    async with pool.acquire() as conn:
        dead = await conn.fetch("SELECT message FROM pgmq.q_embed_dlq")
        assert [d["message"]["message"] for d in dead] == [stranger]
        assert "none of its ids exist" in dead[0]["message"]["error"]
        assert await conn.fetchval("SELECT count(*) FROM pgmq.q_embed") == 0
    j = await job(pool, done.job_id)
    assert j["status"] == "succeeded" and j["progress"]["total"] == 0
