"""``mnemo-embedder``: the embedding worker (the same command locally and in containers)."""

from __future__ import annotations

import argparse
import asyncio

import structlog

from mnemo_core import logging as mlog
from mnemo_core import service, workers
from mnemo_core.settings import Settings
from mnemo_embedder import model as models
from mnemo_embedder.worker import EmbedWorker

log = mlog.get(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = service.worker_arguments("embedder", __doc__)
    p.add_argument("--threads", type=int, default=None, help="torch threads (MNEMO_TORCH_THREADS)")
    return p.parse_args(argv)


async def amain(args: argparse.Namespace, settings: Settings) -> int:
    if args.check:
        ok = await service.check_heartbeat(settings.dsn(), "embedder", settings.worker_dead_after_s)
        return 0 if ok else 1
    worker_id = workers.new_worker_id("embedder")
    # Every line of this process from here on names its worker, model loading included.
    structlog.contextvars.bind_contextvars(worker_id=worker_id)
    app_name = f"mnemo-embedder:{worker_id}"
    await service.wait_for_schema(settings.dsn(), application_name=app_name)
    threads = args.threads if args.threads is not None else settings.torch_threads
    model = await asyncio.to_thread(
        models.load,
        settings.embedding_model,
        dim=settings.embedding_dim,
        batch_size=settings.batch_size,
        threads=threads,
    )
    log.info("model_loaded", model=model.name, dim=model.dim)
    # The database may have gone away while the model loaded: wait for it again.
    pool = await service.open_pool(
        settings.dsn(),
        application_name=app_name,
        min_size=1,
        max_size=4,
        command_timeout_s=settings.db_command_timeout_s,
    )
    try:
        worker = EmbedWorker(pool, model, settings, worker_id=worker_id, once=args.once)
        await service.run_until_stopped(worker.run(), worker.stop, grace_s=settings.grace_period_s)
    finally:
        await pool.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    service.run_main("embedder", amain, parse_args(argv))
