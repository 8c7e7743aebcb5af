"""The workers table: registration, heartbeats, liveness."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import asyncpg

from mnemo_core import __version__
from mnemo_core.queries import Q


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
    conn: asyncpg.Connection, worker_id: str, processed: int, failed: int, batch_size: int
) -> None:
    await conn.execute(Q["beat"], worker_id, processed, failed, batch_size)


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
