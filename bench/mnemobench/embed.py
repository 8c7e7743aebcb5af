"""``embed_pipeline`` and ``scaling``: texts posted through the API, queued, embedded by
embedder processes and written to pgvector, against the model's ``encode`` on the same texts
in one process."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import numpy as np

from bench.mnemobench import corpus
from bench.mnemobench.context import Context, first_then_second, post_events, wait_jobs
from bench.mnemobench.stack import wait_workers


async def pipeline(
    ctx: Context, texts: list[str], threads: list[int], label: str
) -> dict[str, Any]:
    """One embedder per entry of ``threads`` (its torch threads); returns texts/s from the
    first POST until every job has succeeded."""
    cfg, stack = ctx.cfg, ctx.stack
    dsn = await stack.database(label)
    api, url = await stack.api(dsn)
    embedders = [stack.embedder(dsn, t) for t in threads]
    try:
        await wait_workers(dsn, "embedder", len(embedders), [api, *embedders])
        # Warm-up, not timed: every embedder's first model calls allocate.
        warm = await post_events(url, corpus.notes(cfg.batch_size * len(threads), seed=99), 16)
        await wait_jobs(dsn, warm, 120, [api, *embedders])
        started = time.perf_counter()
        jobs = await post_events(url, texts, cfg.post_batch)
        posted = time.perf_counter() - started
        await wait_jobs(dsn, jobs, 1800, [api, *embedders])
        seconds = time.perf_counter() - started
        conn = await asyncpg.connect(dsn)
        try:
            stored = await conn.fetchval(
                "SELECT count(*) FROM events "
                "WHERE embedding IS NOT NULL AND job_id = ANY($1::uuid[])",
                jobs,
            )
        finally:
            await conn.close()
        if stored != len(texts):
            raise RuntimeError(f"{label}: {stored} vectors stored for {len(texts)} texts")
    finally:
        stack.stop(*embedders, api)
    return {
        "dsn": dsn,
        "seconds": seconds,
        "post_seconds": posted,
        "texts_per_s": len(texts) / seconds,
    }


async def real_vectors(dsn: str) -> tuple[np.ndarray, list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        from pgvector.asyncpg import register_vector

        await register_vector(conn)
        rows = await conn.fetch(
            "SELECT content->>'text' AS text, embedding FROM events WHERE embedding IS NOT NULL "
            "ORDER BY content->>'text'"
        )
    finally:
        await conn.close()
    return np.stack([r["embedding"].to_numpy() for r in rows]).astype(np.float32), [
        r["text"] for r in rows
    ]


async def run(ctx: Context) -> dict[str, dict[str, Any]]:
    """``embed_pipeline``: one embedder with ``cfg.threads`` torch threads against raw encode
    with the same threads and batch size."""
    cfg = ctx.cfg
    texts = corpus.mixed_corpus(cfg.n_notes, cfg.n_code)
    # Alternate the two, best of each (noise only ever slows a run down). Which goes first
    # alternates too (raw, pipeline, pipeline, raw, ...): on a machine that slows down or
    # speeds up over minutes, neither side is always measured later.
    raws, e2es = [], []
    for k in range(cfg.e2e_rounds):
        for side in first_then_second(k, ("raw", "e2e")):
            if side == "raw":
                raws.append(await ctx.encode_baseline(texts, cfg.threads, f"embed-raw-{k}"))
            else:
                e2es.append(await pipeline(ctx, texts, [cfg.threads], f"embed_e2e_{k}"))
    ctx.base_vectors, ctx.base_texts = await real_vectors(e2es[0]["dsn"])
    raw = max(raws, key=lambda r: r["texts_per_s"])
    e2e = max(e2es, key=lambda r: r["texts_per_s"])
    ctx.two_threads_per_s = e2e["texts_per_s"]
    chars = [len(t) for t in texts]
    return {
        "embed_pipeline": {
            "texts": len(texts),
            "notes": cfg.n_notes,
            "code_chunks": cfg.n_code,
            "median_chars": int(np.median(chars)),
            "threads": cfg.threads,
            "batch_size": cfg.batch_size,
            "raw_texts_per_s": raw["texts_per_s"],
            "e2e_texts_per_s": e2e["texts_per_s"],
            "ratio": e2e["texts_per_s"] / raw["texts_per_s"],
            "raw_seconds": raw["seconds"],
            "e2e_seconds": e2e["seconds"],
            "post_seconds": e2e["post_seconds"],
            "raw_runs_per_s": [r["texts_per_s"] for r in raws],
            "e2e_runs_per_s": [r["texts_per_s"] for r in e2es],
        }
    }


async def run_scaling(ctx: Context) -> dict[str, dict[str, Any]]:
    """``scaling``: the same corpus through one embedder with one torch thread, then two
    embedders with one each (the machine's two cores); and raw ``encode`` the same ways (one
    process, then two at once on half the texts each): what the machine gives two model
    processes with no pipeline between them."""
    cfg = ctx.cfg
    texts = corpus.mixed_corpus(cfg.n_notes, cfg.n_code)
    # Alternate the two, best of each: load from other work only ever slows a run down, and
    # it slows the two-embedder runs most (the one-embedder run has a core to spare).
    ones, twos, raw_ones, raw_twos = [], [], [], []
    raw_each: list[list[float]] = []
    for k in range(cfg.scaling_rounds):
        for side in first_then_second(k, ("one", "two")):  # one, two, two, one, ...
            if side == "one":
                ones.append((await pipeline(ctx, texts, [1], f"scale_one_{k}"))["texts_per_s"])
            else:
                twos.append((await pipeline(ctx, texts, [1, 1], f"scale_two_{k}"))["texts_per_s"])
        # What the machine gives two model processes at once, with no pipeline: raw encode
        # with one thread alone, then two such processes on half the texts each.
        raw_ones.append((await ctx.encode_baseline(texts, 1, f"scale-raw-one-{k}"))["texts_per_s"])
        halves = [texts[0::2], texts[1::2]]
        together = await ctx.encode_together(halves, 1, f"scale-raw-two-{k}")
        raw_twos.append(together["texts_per_s"])
        raw_each.append(together["each_per_s"])
    one, two = max(ones), max(twos)
    return {
        "scaling": {
            "one_worker_per_s": one,
            "two_workers_per_s": two,
            "two_workers_speedup": two / one,
            "one_worker_runs_per_s": ones,
            "two_workers_runs_per_s": twos,
            "one_worker_threads": 1,
            "two_workers_threads": [1, 1],
            "one_worker_two_threads_per_s": ctx.two_threads_per_s,
            "raw_one_process_per_s": max(raw_ones),
            "raw_two_processes_per_s": max(raw_twos),
            "raw_two_processes_speedup": max(raw_twos) / max(raw_ones),
            "raw_one_process_runs_per_s": raw_ones,
            "raw_two_processes_runs_per_s": raw_twos,
            # Each raw process's own rate beside the other, against one process alone.
            "raw_beside_other_ratio": max(sum(e) / len(e) for e in raw_each) / max(raw_ones),
            "raw_each_runs_per_s": raw_each,
        }
    }
