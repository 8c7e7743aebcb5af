"""The workers table: registration, heartbeats, liveness."""

from __future__ import annotations

import bisect
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from mnemo_core import __version__
from mnemo_core.queries import Q

# Upper bounds of the histogram buckets a heartbeat reports (one more count for +Inf).
# Changing them needs new columns: the stored counts are positional.
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
ITEM_SECONDS_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


def _zeros(bounds: tuple[float, ...]) -> list[int]:
    return [0] * (len(bounds) + 1)


@dataclass
class BatchStats:
    """What a worker measured since its last heartbeat: batches, their sizes, and work
    seconds per item (a batch of n items taking s seconds counts n items of s/n each)."""

    batches: int = 0
    items: int = 0
    busy_s: float = 0.0
    batch_hist: list[int] = field(default_factory=lambda: _zeros(BATCH_BUCKETS))
    item_hist: list[int] = field(default_factory=lambda: _zeros(ITEM_SECONDS_BUCKETS))

    def observe(self, items: int, seconds: float) -> None:
        if items <= 0:
            return
        self.batches += 1
        self.items += items
        self.busy_s += seconds
        self.batch_hist[bisect.bisect_left(BATCH_BUCKETS, items)] += 1
        self.item_hist[bisect.bisect_left(ITEM_SECONDS_BUCKETS, seconds / items)] += items

    def snapshot(self) -> BatchStats:
        return BatchStats(
            self.batches, self.items, self.busy_s, list(self.batch_hist), list(self.item_hist)
        )

    def subtract(self, other: BatchStats) -> None:
        self.batches -= other.batches
        self.items -= other.items
        self.busy_s -= other.busy_s
        self.batch_hist = [a - b for a, b in zip(self.batch_hist, other.batch_hist, strict=True)]
        self.item_hist = [a - b for a, b in zip(self.item_hist, other.item_hist, strict=True)]


def new_worker_id(kind: str) -> str:
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def register(conn: asyncpg.Connection, worker_id: str, kind: str, batch_size: int) -> None:
    await conn.execute(
        Q["register_worker"],
        worker_id,
        kind,
        socket.gethostname(),
        os.getpid(),
        __version__,
        batch_size,
    )


async def beat(
    conn: asyncpg.Connection,
    worker_id: str,
    processed: int,
    failed: int,
    batch_size: int,
    stats: BatchStats | None = None,
) -> None:
    """Heartbeat with the counters since the last one. ``stats`` (batch sizes and work time)
    is taken only once the beat is written: a failed beat loses nothing."""
    snap = stats.snapshot() if stats is not None else BatchStats()
    await conn.execute(
        Q["beat_with_stats"],
        worker_id,
        processed,
        failed,
        batch_size,
        snap.batches,
        snap.items,
        snap.busy_s,
        snap.batch_hist,
        snap.item_hist,
    )
    if stats is not None:
        stats.subtract(snap)


async def stopped(conn: asyncpg.Connection, worker_id: str) -> None:
    await conn.execute(Q["worker_stopped"], worker_id)


async def live_count(conn: asyncpg.Connection, kind: str | None, dead_after_s: float) -> int:
    return int(await conn.fetchval(Q["live_workers"], kind, dead_after_s))


async def list_recent(
    conn: asyncpg.Connection, *, seen_within_s: float, dead_after_s: float
) -> list[dict[str, Any]]:
    rows = await conn.fetch(Q["list_workers"], seen_within_s, dead_after_s)
    return [
        {
            "id": r["id"],
            "kind": r["kind"],
            "host": r["host"],
            "pid": r["pid"],
            "version": r["version"],
            "started_at": r["started_at"].isoformat(),
            "last_heartbeat": r["last_heartbeat"].isoformat(),
            "stopped_at": r["stopped_at"].isoformat() if r["stopped_at"] else None,
            "processed": r["processed"],
            "failed": r["failed"],
            "batch_size": r["batch_size"],
            "alive": r["alive"],
        }
        for r in rows
    ]


async def totals(conn: asyncpg.Connection, dead_after_s: float) -> list[asyncpg.Record]:
    """Per kind: live workers and the lifetime counters of every worker row (for /metrics)."""
    return list(await conn.fetch(Q["worker_totals"], dead_after_s))
