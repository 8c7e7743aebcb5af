"""``ingest``: POST /v1/events from a separate load process against asyncpg doing the same
insert + ``pgmq.send`` in one transaction, at the same concurrency; and bulk events through
POST /v1/events/batch. No worker runs: this is the write path alone."""

from __future__ import annotations

from typing import Any

from bench.mnemobench import corpus
from bench.mnemobench.context import Context


async def run(ctx: Context) -> dict[str, dict[str, Any]]:
    cfg, stack = ctx.cfg, ctx.stack
    dsn = await stack.database("ingest")
    api, url = await stack.api(dsn)
    texts = corpus.notes(2000, seed=11)
    bodies = [
        {"content": {"text": t}, "metadata": {"source": "bench", "n": i}}
        for i, t in enumerate(texts)
    ]
    common = {"seconds": cfg.ingest_seconds, "warmup_s": 1.0, "concurrency": cfg.concurrency}
    raw_runs, api_runs = [], []
    try:
        # Alternate the two, best of each: noise from other work only ever slows a run down.
        for k in range(cfg.ingest_rounds):
            raw_runs.append(
                await ctx.load(
                    {"mode": "raw_ingest", "dsn": dsn, "bodies": bodies, **common},
                    f"ingest-raw-{k}",
                )
            )
            api_runs.append(
                await ctx.load(
                    {
                        "mode": "http",
                        "url": url,
                        "path": "/v1/events",
                        "bodies": bodies,
                        "expect": [202],
                        **common,
                    },
                    f"ingest-api-{k}",
                )
            )
        n = cfg.batch_events
        batches = [
            {"events": [bodies[(i * n + j) % len(bodies)] for j in range(n)]} for i in range(4)
        ]
        batch = await ctx.load(
            {
                "mode": "http",
                "url": url,
                "path": "/v1/events/batch",
                "bodies": batches,
                "expect": [202],
                "items": n,
                "seconds": cfg.ingest_seconds,
                "warmup_s": 1.0,
                "concurrency": cfg.batch_concurrency,
            },
            "ingest-batch",
        )
    finally:
        stack.stop(api)
    for r in [*api_runs, batch]:
        if r["errors"]:
            raise RuntimeError(f"ingest load saw errors: {r['first_error']}")
    raw = max(r["items_per_s"] for r in raw_runs)
    via_api = max(r["items_per_s"] for r in api_runs)
    return {
        "ingest": {
            "concurrency": cfg.concurrency,
            "raw_per_s": raw,
            "api_per_s": via_api,
            "ratio": via_api / raw,
            "batch_events_per_s": batch["items_per_s"],
            "batch_size": n,
            "batch_concurrency": cfg.batch_concurrency,
            "raw_runs_per_s": [r["items_per_s"] for r in raw_runs],
            "api_runs_per_s": [r["items_per_s"] for r in api_runs],
        }
    }
