"""What every section shares: the sizes of a run, the stack, and running the baseline and
load processes."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np

from bench.mnemobench.stack import Stack, wait_until
from mnemo_core.settings import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Config:
    quick: bool
    model: str
    threads: int  # torch threads of the pipeline's one embedder (and of its raw baseline)
    batch_size: int  # texts per model call (MNEMO_BATCH_SIZE's default)
    n_notes: int
    n_code: int
    post_batch: int  # events per POST /v1/events/batch while feeding the pipeline
    ingest_seconds: float
    ingest_rounds: int
    scaling_rounds: int
    e2e_rounds: int  # embed_pipeline and the indexer's whole job, each against its baseline
    concurrency: int
    batch_events: int
    batch_concurrency: int
    search_events: int
    vector_queries: int
    text_queries: int
    recall_queries: int
    # Events (of ~700 characters) embedded while text search latency is measured again.
    during_ingest_events: int
    index_packages: list[str] | None  # None: the whole standard library (without tests)
    e2e_packages: list[str]

    @classmethod
    def full(cls) -> Config:
        return cls(
            quick=False,
            model=DEFAULT_MODEL,
            threads=2,
            batch_size=64,
            n_notes=2400,
            n_code=400,
            post_batch=100,
            ingest_seconds=6.0,
            ingest_rounds=3,
            scaling_rounds=2,
            e2e_rounds=2,
            concurrency=16,
            batch_events=1000,
            batch_concurrency=2,
            search_events=100_000,
            vector_queries=400,
            text_queries=150,
            recall_queries=100,
            during_ingest_events=1000,
            index_packages=None,
            e2e_packages=["json", "email"],
        )

    @classmethod
    def quick_run(cls) -> Config:
        return cls(
            quick=True,
            model="hash-384",
            threads=1,
            batch_size=64,
            n_notes=120,
            n_code=30,
            post_batch=50,
            ingest_seconds=1.0,
            ingest_rounds=1,
            scaling_rounds=1,
            e2e_rounds=1,
            concurrency=4,
            batch_events=200,
            batch_concurrency=1,
            search_events=2_000,
            vector_queries=30,
            text_queries=10,
            recall_queries=10,
            during_ingest_events=100,
            index_packages=["json"],
            e2e_packages=["json"],
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    cfg: Config
    stack: Stack
    work: Path
    # Real vectors (and their texts) from the embed section, the seed of the search corpus.
    base_vectors: np.ndarray | None = None
    base_texts: list[str] = field(default_factory=list)
    two_threads_per_s: float | None = None  # the embed section's pipeline, for scaling

    async def process(self, module: str, spec: dict[str, Any], label: str) -> dict[str, Any]:
        """Run ``python -m bench.mnemobench.<module> spec.json`` and return its JSON answer."""
        path = self.work / f"{label}.json"
        path.write_text(json.dumps(spec))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"bench.mnemobench.{module}",
            str(path),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{module} ({label}) failed:\n{err.decode()[-3000:]}")
        answer: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        (self.work / f"{label}.out.json").write_text(json.dumps(answer)[:100_000])
        return answer

    def _encode_spec(self, texts: list[str], threads: int, label: str) -> dict[str, Any]:
        """A raw ``encode`` baseline's spec: the pipeline's model and batch size."""
        texts_path = self.work / f"{label}-texts.json"
        texts_path.write_text(json.dumps(texts))
        return {
            "mode": "encode",
            "model": self.cfg.model,
            "dim": self.stack.dim,
            "batch_size": self.cfg.batch_size,
            "threads": threads,
            "texts": str(texts_path),
        }

    async def encode_baseline(
        self, texts: list[str], threads: int, label: str, save: Path | None = None
    ) -> dict[str, Any]:
        spec = self._encode_spec(texts, threads, label)
        spec["save"] = str(save) if save else None
        return await self.process("baselines", spec, label)

    async def encode_together(
        self, parts: list[list[str]], threads: int, label: str
    ) -> dict[str, Any]:
        """Raw ``encode`` in one process per part at the same time, each with ``threads``
        torch threads; timed from the first start to the last end, after all have loaded."""
        flag = self.work / f"{label}.go"
        specs = [
            {**self._encode_spec(texts, threads, f"{label}-{k}"), "start_flag": str(flag)}
            for k, texts in enumerate(parts)
        ]
        runs = [
            asyncio.ensure_future(self.process("baselines", spec, f"{label}-{k}"))
            for k, spec in enumerate(specs)
        ]

        async def loaded() -> bool:
            for r in runs:
                if r.done():
                    r.result()  # a process that failed before it was ready: its error
            return len(list(self.work.glob(f"{flag.name}.ready.*"))) == len(runs)

        try:
            await wait_until(loaded, within_s=300, what="the raw encoders loaded", interval=0.05)
        finally:
            flag.touch()  # on failure too: no encoder is left waiting for it
            answers = await asyncio.gather(*runs, return_exceptions=True)
        for a in answers:
            if isinstance(a, BaseException):
                raise a
        n = sum(a["n"] for a in answers)
        seconds = max(a["ended"] for a in answers) - min(a["started"] for a in answers)
        # Each process's own rate too: the sum ignores how unevenly the parts ended.
        each = [a["texts_per_s"] for a in answers]
        return {"n": n, "seconds": seconds, "texts_per_s": n / seconds, "each_per_s": each}

    async def load(self, spec: dict[str, Any], label: str) -> dict[str, Any]:
        return await self.process("loadgen", spec, label)


def first_then_second(round_no: int, pair: tuple[str, str]) -> tuple[str, str]:
    """The order of a baseline and its measurement in round ``round_no``: as given in even
    rounds, reversed in odd ones (a, b, b, a, a, b, ...), so that a drift of the machine's
    speed over the section does not always fall on the same side of a ratio."""
    return pair if round_no % 2 == 0 else (pair[1], pair[0])


async def post_events(url: str, texts: list[str], per_request: int) -> list[str]:
    """POST texts through /v1/events/batch; returns the job ids."""
    jobs = []
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(0, len(texts), per_request):
            body = {"events": [{"content": {"text": t}} for t in texts[i : i + per_request]]}
            r = await client.post(f"{url}/v1/events/batch", json=body)
            r.raise_for_status()
            jobs.append(r.json()["job_id"])
    return jobs


async def wait_jobs(dsn: str, job_ids: list[str], within_s: float, services: list[Any]) -> None:
    """Until every job has succeeded (a failed one is an error)."""
    conn = await asyncpg.connect(dsn)
    try:

        async def done() -> bool:
            for s in services:
                s.check()
            rows = await conn.fetch(
                "SELECT status, count(*) AS n FROM jobs WHERE id = ANY($1::uuid[]) GROUP BY 1",
                job_ids,
            )
            by = {r["status"]: r["n"] for r in rows}
            if by.get("failed") or by.get("cancelled"):
                raise RuntimeError(f"jobs did not succeed: {by}")
            return by.get("succeeded", 0) == len(job_ids)

        await wait_until(done, within_s=within_s, what=f"{len(job_ids)} jobs", interval=0.1)
    finally:
        await conn.close()
