"""``indexer``: parsing the Python standard library (without its test suites), by the raw
chunker in one process and by ``mnemo-indexer`` processing the index job with no embedder
(every file parsed, chunked and written); then a whole index job with an embedder running,
from the upload until the job succeeds, against raw ``encode`` of the same chunk texts."""

from __future__ import annotations

import io
import tarfile
import time
from typing import Any

import asyncpg
import httpx

from bench.mnemobench import corpus
from bench.mnemobench.context import Context, first_then_second, post_events, wait_jobs
from bench.mnemobench.stack import wait_until, wait_workers
from mnemo_core.text import chunk_embed_text


def archive(files: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for rel in files:
            tar.add(corpus.STDLIB / rel, arcname=rel, recursive=False)
    return buf.getvalue()


async def upload(url: str, repository: str, data: bytes) -> str:
    async with httpx.AsyncClient(timeout=300) as client:
        r = await client.post(
            f"{url}/v1/code/index",
            data={"repository": repository},
            files={"archive": (f"{repository}.tar.gz", data, "application/gzip")},
        )
    if r.status_code != 202:
        raise RuntimeError(f"index upload answered {r.status_code}: {r.text[:500]}")
    return str(r.json()["job_id"])


async def parse_only(ctx: Context, files: list[str]) -> dict[str, Any]:
    stack = ctx.stack
    dsn = await stack.database("index_parse")
    api, url = await stack.api(dsn)
    indexer = stack.indexer(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await wait_workers(dsn, "indexer", 1, [api, indexer])
        data = archive(files)
        t = time.perf_counter()
        job = await upload(url, "stdlib", data)
        started = time.perf_counter()

        async def parsed() -> bool:
            indexer.check()
            r = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE status IN ('indexed', 'failed')) AS parsed, "
                "count(*) AS total FROM code_files WHERE job_id = $1::uuid",
                job,
            )
            return bool(r["total"]) and r["parsed"] == r["total"]

        await wait_until(parsed, within_s=1800, what="every file parsed", interval=0.05)
        seconds = time.perf_counter() - started
        r = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM code_files WHERE job_id = $1::uuid) AS files, "
            "(SELECT count(*) FROM code_files WHERE job_id = $1::uuid AND status = 'failed') "
            "AS failed, (SELECT count(*) FROM code_chunks WHERE job_id = $1::uuid) AS chunks",
            job,
        )
    finally:
        await conn.close()
        stack.stop(indexer, api)
    return {
        "seconds": seconds,
        "upload_seconds": started - t,
        "files": r["files"],
        "failed": r["failed"],
        "chunks": r["chunks"],
        "files_per_s": r["files"] / seconds,
        "chunks_per_s": r["chunks"] / seconds,
    }


async def whole_job(ctx: Context, files: list[str], label: str) -> dict[str, Any]:
    """The index job of ``files`` with an embedder running, from the upload until the job
    succeeds; returns its seconds and the chunk texts the embedder read."""
    cfg, stack = ctx.cfg, ctx.stack
    dsn = await stack.database(label)
    api, url = await stack.api(dsn)
    indexer = stack.indexer(dsn)
    embedder = stack.embedder(dsn, cfg.threads)
    procs = [api, indexer, embedder]
    try:
        await wait_workers(dsn, "indexer", 1, procs)
        await wait_workers(dsn, "embedder", 1, procs)
        warm = await post_events(url, corpus.notes(cfg.batch_size, seed=98), cfg.batch_size)
        await wait_jobs(dsn, warm, 120, procs)
        data = archive(files)
        started = time.perf_counter()
        job = await upload(url, "e2e", data)
        await wait_jobs(dsn, [job], 1800, procs)
        seconds = time.perf_counter() - started
    finally:
        stack.stop(*procs)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT qualified_name, signature, docstring, content FROM code_chunks "
            "WHERE job_id = $1::uuid ORDER BY id",
            job,
        )
    finally:
        await conn.close()
    texts = [
        chunk_embed_text(r["qualified_name"], r["signature"], r["docstring"], r["content"])
        for r in rows
    ]
    return {"seconds": seconds, "texts": texts}


async def e2e_rounds(ctx: Context, files: list[str]) -> dict[str, Any]:
    """The whole job against raw ``encode`` of its chunk texts, alternated (job, raw, raw,
    job, ...; the texts are the same every time), best of each."""
    jobs: list[float] = []
    raws: list[float] = []
    texts: list[str] = []
    for k in range(ctx.cfg.e2e_rounds):
        # Round 0 must run the job first: the raw side needs its chunk texts.
        for side in first_then_second(k, ("job", "raw")):
            if side == "job":
                job = await whole_job(ctx, files, f"index_e2e_{k}")
                jobs.append(job["seconds"])
                texts = texts or job["texts"]
            else:
                raw = await ctx.encode_baseline(texts, ctx.cfg.threads, f"index_e2e_{k}-raw")
                raws.append(raw["seconds"])
    return {
        "chunks": len(texts),
        "seconds": min(jobs),
        "raw_seconds": min(raws),
        "runs": jobs,
        "raw_runs": raws,
    }


async def run(ctx: Context) -> dict[str, dict[str, Any]]:
    cfg = ctx.cfg
    files = corpus.stdlib_files(cfg.index_packages)
    raw = await ctx.process(
        "baselines", {"mode": "parse", "root": str(corpus.STDLIB), "files": files}, "parse-raw"
    )
    service = await parse_only(ctx, files)
    e2e_files = corpus.stdlib_files(cfg.e2e_packages)
    e2e = await e2e_rounds(ctx, e2e_files)
    return {
        "indexer": {
            "corpus": "stdlib" if cfg.index_packages is None else ",".join(cfg.index_packages),
            "excluded": [*sorted(corpus.TEST_DIRS), "test_*"],
            "files": service["files"],
            "files_failed": service["failed"],
            "chunks": service["chunks"],
            "files_per_s": service["files_per_s"],
            "chunks_per_s": service["chunks_per_s"],
            "parse_seconds": service["seconds"],
            "upload_seconds": service["upload_seconds"],
            "raw_files_per_s": raw["parse"]["files_per_s"],
            "raw_chunks_per_s": raw["parse"]["chunks_per_s"],
            "raw_build_files_per_s": raw["build"]["files_per_s"],
            "e2e_corpus": ",".join(cfg.e2e_packages),
            "e2e_files": len(e2e_files),
            "e2e_chunks": e2e["chunks"],
            "e2e_seconds": e2e["seconds"],
            "e2e_raw_encode_seconds": e2e["raw_seconds"],
            "e2e_ratio": e2e["raw_seconds"] / e2e["seconds"],
            "e2e_runs_seconds": e2e["runs"],
            "e2e_raw_runs_seconds": e2e["raw_runs"],
        }
    }
