"""What the routes share, created by the lifespan and handed down through ``app.state``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from fastapi import Request

from mnemo_api.query_embedding import QueryEmbedder
from mnemo_core import queue
from mnemo_core.db import in_transaction
from mnemo_core.settings import Settings

T = TypeVar("T")


@dataclass
class QueueStatsCache:
    """pgmq.metrics_all() counts rows: run it at most every ``ttl_s`` seconds."""

    ttl_s: float = 2.0
    _at: float = 0.0
    _value: list[dict[str, Any]] = field(default_factory=list)

    async def get(
        self, pool: asyncpg.Pool, *, acquire_timeout_s: float | None = None
    ) -> list[dict[str, Any]]:
        now = time.monotonic()
        if now - self._at > self.ttl_s:
            async with pool.acquire(timeout=acquire_timeout_s) as conn:
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

    def acquire(self) -> Any:
        """A pooled connection (``async with st.acquire() as conn``), waited for at most
        ``MNEMO_DB_ACQUIRE_TIMEOUT_S``, then ``TimeoutError`` (a 503). While a stalled
        database held every connection, each request behind them waited for one, then
        stalled on its own statement: 14 requests at once got their 503 after 60 and 120 s
        (README, Not built yet)."""
        return self.pool.acquire(timeout=self.settings.db_acquire_timeout_s)

    async def transaction(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``work`` in a transaction (db.in_transaction), on a connection got as ``acquire``."""
        return await in_transaction(
            self.pool, work, acquire_timeout_s=self.settings.db_acquire_timeout_s
        )


async def state(request: Request) -> AppState:
    # async: FastAPI runs a sync dependency in a worker thread, a thread hop per request.
    return request.app.state.mnemo
