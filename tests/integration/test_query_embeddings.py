"""Query embeddings for text search, in-process against the real database: the API's
QueryEmbedder asks, a running EmbedWorker answers through ``query_answers``. The vectors
come back exactly, at any dimension up to the 2,000 the settings allow; a query that
fails gets its error and the worker goes on answering."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import numpy as np
import pytest

from mnemo_api.query_embedding import QueryEmbedder
from mnemo_core import workers
from mnemo_core.errors import EmbedderUnavailable
from mnemo_core.settings import MAX_EMBEDDING_DIM, Settings
from mnemo_embedder.model import POISON_MARKER, HashModel
from mnemo_embedder.worker import EmbedWorker
from tests.helpers import wait_for

NAN_MARKER = "make-a-nan"


class NaNModel(HashModel):
    """The hashing model, except that one chosen text comes out as NaNs."""

    def encode(self, texts: list[str]) -> np.ndarray:
        out = super().encode(texts)
        for i, t in enumerate(texts):
            if NAN_MARKER in t:
                out[i] = np.nan
        return out


@asynccontextmanager
async def running_worker(pool: asyncpg.Pool, dsn: str, model: HashModel) -> AsyncIterator:
    s = Settings(  # type: ignore[call-arg]
        database_url=dsn,
        embedding_model=model.name,
        embedding_dim=model.dim,
        heartbeat_s=0.2,
        query_timeout_s=10,
    )
    worker = EmbedWorker(pool, model, s, worker_id=f"q-{uuid.uuid4().hex[:6]}")
    task = asyncio.create_task(worker.run())
    asker = QueryEmbedder(pool, dsn, timeout_s=10, dead_after_s=20)

    async def registered() -> int:
        async with pool.acquire() as conn:
            return await workers.live_count(conn, "embedder", 20)

    await wait_for(registered, timeout=10, what="the worker registered")
    try:
        yield worker, task, asker
    finally:
        await asker.close()
        worker.stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def at_2000(pool: asyncpg.Pool, dsn: str) -> AsyncIterator:
    async with running_worker(pool, dsn, NaNModel(MAX_EMBEDDING_DIM)) as x:
        yield x


async def test_vectors_of_2000_dimensions_come_back_exactly(at_2000: tuple) -> None:
    worker, _task, asker = at_2000
    texts = ["where is the spare key", "rotate the database password on Friday"]
    got = await asyncio.gather(*(asker.embed(t) for t in texts))
    want = worker.model.encode(texts)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32 and g.shape == (MAX_EMBEDDING_DIM,)
        assert np.array_equal(g, w)  # float32 end to end: no rounding on the way


async def test_a_failing_query_gets_its_error_and_the_worker_goes_on(
    at_2000: tuple, pool: asyncpg.Pool
) -> None:
    worker, task, asker = at_2000
    results = await asyncio.gather(
        asker.embed(f"poisoned {POISON_MARKER} query"),
        asker.embed(f"a {NAN_MARKER} query"),
        asker.embed("an ordinary query"),
        return_exceptions=True,
    )
    poisoned, nan, ordinary = results
    assert isinstance(poisoned, EmbedderUnavailable) and "poison marker" in str(poisoned)
    assert isinstance(nan, EmbedderUnavailable) and "not finite" in str(nan)
    assert isinstance(ordinary, np.ndarray) and ordinary.shape == (MAX_EMBEDDING_DIM,)
    assert not task.done()
    again = await asker.embed("still answering")
    assert np.array_equal(again, worker.model.encode(["still answering"])[0])
    async with pool.acquire() as conn:  # every answer was taken by its asker
        assert await conn.fetchval("SELECT count(*) FROM query_answers") == 0
        assert await conn.fetchval("SELECT count(*) FROM pgmq.q_embed_query") == 0


async def test_answers_nobody_took_are_dropped(pool: asyncpg.Pool, dsn: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO query_answers (rid, error, created_at)"
            " VALUES ('abandoned', 'x', now() - interval '1 hour')"
        )
    async with running_worker(pool, dsn, HashModel(384)) as (_worker, _task, asker):
        await asker.embed("a fresh query")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM query_answers") == 0
