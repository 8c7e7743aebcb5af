"""``search``: POST /v1/search latency over ``search_events`` events, by vector and by text
(the query embedded by a live embedder through the database), text search again while that
embedder works through a batch of ~700-character events, and recall@10 of the HNSW answers
against an exact scan of the same rows.

The corpus: real model vectors (from the embed section, or encoded here) mixed and perturbed
into ``search_events`` unit vectors (see corpus.synthesize). Loading is setup, not measured:
the rows go in through the project's own ``insert_events`` statement with the HNSW index
dropped, then the index is created again from its recorded definition."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import httpx
import numpy as np
from pgvector import Vector

from bench.mnemobench import corpus
from bench.mnemobench.context import Context, wait_jobs
from bench.mnemobench.stack import wait_workers
from mnemo_core import db
from mnemo_core.queries import Q

HNSW_INDEX = "events_embedding_hnsw_idx"


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {f"p{p}": float(np.percentile(a, p)) for p in (50, 95, 99)}


async def base(ctx: Context) -> tuple[np.ndarray, list[str]]:
    if ctx.base_vectors is not None:
        return ctx.base_vectors, ctx.base_texts
    texts = corpus.notes(ctx.cfg.n_notes, seed=21) + corpus.code_chunks(ctx.cfg.n_code, seed=22)
    path = ctx.work / "search-base.npy"
    await ctx.encode_baseline(texts, ctx.cfg.threads, "search-base", save=path)
    return np.load(path), texts


async def load(ctx: Context, dsn: str, n: int) -> dict[str, Any]:
    vecs_base, texts = await base(ctx)
    vecs = corpus.synthesize(vecs_base, n)
    rng = np.random.default_rng(6)
    pick = rng.integers(0, len(texts), n)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    started = time.perf_counter()
    conn = await db.connect(dsn, application_name="mnemo-bench:load")
    try:
        indexdef = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = $1", HNSW_INDEX
        )
        await conn.execute(f"DROP INDEX {HNSW_INDEX}")
        step = 5000
        for i in range(0, n, step):
            k = range(i, min(i + step, n))
            await conn.execute(
                Q["insert_events"],
                [uuid.uuid4() for _ in k],
                [start + dt.timedelta(minutes=5 * j) for j in k],
                [{"text": f"{texts[pick[j]][:300]} ({j})"} for j in k],
                [{"source": "bench", "group": j % 10} for j in k],
                [Vector(vecs[j]) for j in k],
                [ctx.cfg.model] * len(k),
                ["done"] * len(k),
                None,
            )
        loaded = time.perf_counter()
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute(indexdef)
        await conn.execute("VACUUM ANALYZE events")
        indexed = time.perf_counter()
    finally:
        await conn.close()
    return {"insert_seconds": loaded - started, "index_seconds": indexed - loaded}


async def exact(dsn: str, model: str, queries: np.ndarray) -> list[list[str]]:
    conn = await db.connect(dsn, application_name="mnemo-bench:exact")
    try:
        await conn.execute("SET enable_indexscan = off")
        await conn.execute("SET enable_bitmapscan = off")
        out = []
        for q in queries:
            rows = await conn.fetch(
                "SELECT id FROM events WHERE embedding IS NOT NULL AND embedding_model = $2 "
                "ORDER BY embedding <=> $1 LIMIT 10",
                Vector(q),
                model,
            )
            out.append([str(r["id"]) for r in rows])
    finally:
        await conn.close()
    return out


async def text_during_ingest(
    ctx: Context, url: str, dsn: str, queries: list[str]
) -> dict[str, Any]:
    """Text search while the embedder works through one POST /v1/events/batch of
    ~700-character events: the query embeddings and the batch share that embedder."""
    events = [
        {"content": {"text": t}, "metadata": {"source": "bench-ingest"}}
        for t in corpus.paragraphs(ctx.cfg.during_ingest_events)
    ]
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(f"{url}/v1/events/batch", json={"events": events})
        r.raise_for_status()
        job_id = r.json()["job_id"]
    during = await ctx.load(
        {
            "mode": "latency_during",
            "url": url,
            "path": "/v1/search",
            "bodies": [{"q": q, "limit": 10} for q in queries],
            "dsn": dsn,
            "job_ids": [job_id],
            "max_seconds": 900,
        },
        "search-text-during-ingest",
    )
    await wait_jobs(dsn, [job_id], within_s=60, services=[])
    # How long the batch took with the searches beside it (they share the CPUs).
    during["ingest_seconds"] = time.perf_counter() - started
    return during


async def run(ctx: Context) -> dict[str, dict[str, Any]]:
    cfg, stack = ctx.cfg, ctx.stack
    dsn = await stack.database("search")
    setup = await load(ctx, dsn, cfg.search_events)
    vecs_base, _ = await base(ctx)
    warm = 30
    qvecs = corpus.synthesize(vecs_base, cfg.vector_queries + warm, seed=77)
    api, url = await stack.api(dsn)
    embedder = stack.embedder(dsn, cfg.threads)
    try:
        by_vector = await ctx.load(
            {
                "mode": "latency",
                "url": url,
                "path": "/v1/search",
                "warmup": warm,
                "bodies": [{"vector": [round(float(x), 7) for x in q], "limit": 10} for q in qvecs],
            },
            "search-vector",
        )
        await wait_workers(dsn, "embedder", 1, [api, embedder])
        texts = corpus.queries(cfg.text_queries + 10)
        by_text = await ctx.load(
            {
                "mode": "latency",
                "url": url,
                "path": "/v1/search",
                "warmup": 10,
                "bodies": [{"q": t, "limit": 10} for t in texts],
            },
            "search-text",
        )
        during = await text_during_ingest(ctx, url, dsn, texts[10:])
    finally:
        stack.stop(embedder, api)
    for r in (by_vector, by_text, during):
        if r["n_errors"]:
            raise RuntimeError(f"search errors: {r['errors']}")
    n_recall = min(cfg.recall_queries, len(by_vector["ids"]))
    truth = await exact(dsn, cfg.model, qvecs[warm : warm + n_recall])
    hits = sum(
        len(set(got) & set(want))
        for got, want in zip(by_vector["ids"][:n_recall], truth, strict=True)
    )
    recall = hits / sum(len(w) for w in truth)
    v = percentiles(by_vector["latencies_ms"])
    t = percentiles(by_text["latencies_ms"])
    busy = percentiles(during["latencies_ms"])
    return {
        "search": {
            "n_events": cfg.search_events,
            "p50_ms": v["p50"],
            "p95_ms": v["p95"],
            "p99_ms": v["p99"],
            "text_p50_ms": t["p50"],
            "text_p95_ms": t["p95"],
            "text_p99_ms": t["p99"],
            "text_p50_ms_during_ingest": busy["p50"],
            "text_p95_ms_during_ingest": busy["p95"],
            "text_queries_during_ingest": len(during["latencies_ms"]),
            "ingest_events_during": cfg.during_ingest_events,
            "ingest_seconds_during": during["ingest_seconds"],
            "recall_at_10": recall,
            "vector_queries": len(by_vector["latencies_ms"]),
            "text_queries": len(by_text["latencies_ms"]),
            "recall_queries": n_recall,
            **setup,
        }
    }
