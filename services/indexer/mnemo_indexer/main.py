"""``mnemo-indexer``: the code indexing worker (the same command locally and in containers)."""

from __future__ import annotations

import argparse

import structlog

from mnemo_core import service, workers
from mnemo_core.settings import Settings
from mnemo_indexer.pool import FileFailed, ParsePool
from mnemo_indexer.worker import IndexWorker


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = service.worker_arguments("indexer", __doc__)
    p.add_argument(
        "--processes", type=int, default=None, help="parser processes (MNEMO_PARSE_PROCESSES)"
    )
    return p.parse_args(argv)


async def amain(args: argparse.Namespace, settings: Settings) -> int:
    if args.check:
        ok = await service.check_heartbeat(settings.dsn(), "indexer", settings.worker_dead_after_s)
        return 0 if ok else 1
    worker_id = workers.new_worker_id("indexer")
    # Every line of this process from here on names its worker.
    structlog.contextvars.bind_contextvars(worker_id=worker_id)
    app_name = f"mnemo-indexer:{worker_id}"
    processes = args.processes if args.processes is not None else settings.parse_processes
    parser = ParsePool(
        processes,
        settings.parse_timeout_s,
        log_format=settings.log_format,
        log_level=settings.log_level,
    )
    try:
        try:
            await parser.warm_up()
        except FileFailed as exc:
            raise RuntimeError(f"the parser cannot parse: {exc.reason}") from exc
        pool = await service.open_pool(  # waits for the database and its schema
            settings.dsn(),
            application_name=app_name,
            min_size=1,
            max_size=4,
            command_timeout_s=settings.db_command_timeout_s,
        )
        try:
            worker = IndexWorker(pool, settings, parser, worker_id=worker_id, once=args.once)
            await service.run_until_stopped(
                worker.run(), worker.stop, grace_s=settings.grace_period_s
            )
        finally:
            await pool.close()
    finally:
        parser.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    service.run_main("indexer", amain, parse_args(argv))
