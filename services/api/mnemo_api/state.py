"""What the routes share, created by the lifespan and handed down through ``app.state``."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fastapi import Request

from mnemo_api.query_embedding import QueryEmbedder
from mnemo_core import queue
from mnemo_core.settings import Settings


@dataclass
class QueueStatsCache:
    """pgmq.metrics_all() counts rows: run it at most every ``ttl_s`` seconds."""

    ttl_s: float = 2.0
    _at: float = 0.0
    _value: list[dict[str, Any]] = field(default_factory=list)

    async def get(self, pool: asyncpg.Pool) -> list[dict[str, Any]]:
        now = time.monotonic()
        if now - self._at > self.ttl_s:
            async with pool.acquire() as conn:
                self._value = [s.to_json() for s in await queue.stats(conn)]
            self._at = now
        return self._value


@dataclass
class AppState:
    settings: Settings
    pool: asyncpg.Pool
    query_embedder: QueryEmbedder
    queue_stats: QueueStatsCache
    # Archive uploads are unpacked and stored one at a time per process (the others wait,
    # spooled on disk), always in the same thread: the memory one upload needs is reused by
    # the next (one malloc arena), so the bound of one upload holds whatever the concurrency.
    archive_slot: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    archive_thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="mnemo-archive")
    )
    # When this process may next delete expired idempotency keys (monotonic seconds).
    idempotency_purge_at: float = 0.0


async def state(request: Request) -> AppState:
    # async: FastAPI runs a sync dependency in a worker thread, a thread hop per request.
    return request.app.state.mnemo
