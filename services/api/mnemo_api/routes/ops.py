"""Health, readiness, queues and workers."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from mnemo_api.answers import Health, Queues, Ready, Workers, documented
from mnemo_api.state import AppState, state
from mnemo_core import migrate, workers
from mnemo_core.queries import Q

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=None, responses=documented(Health))
@router.head("/health", include_in_schema=False)  # monitors that probe with HEAD
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


async def _check(st: AppState, within_s: float = 3.0) -> list[str]:
    """The database answers, within ``within_s`` for the connection and as much again for
    the queries: one that holds its connections but answers nothing (stopped, frozen) is
    not ready either. Its migrations still pending."""
    async with asyncio.timeout(within_s):
        conn = await st.acquire()
    try:
        async with asyncio.timeout(within_s):
            await conn.fetchval(Q["ping"])
            return await migrate.pending(conn)
    except BaseException:
        # Closed at once: a graceful release would wait on the stalled server (asyncpg's
        # command_timeout, 60 s) to cancel the query.
        conn.terminate()
        raise
    finally:
        await st.pool.release(conn)


@router.get("/ready", response_model=None, responses=documented(Ready))
@router.head("/ready", include_in_schema=False)
async def ready(st: AppState = Depends(state)) -> JSONResponse:
    """The database answers and every migration is applied."""
    try:
        pending = await _check(st)
    except Exception as exc:
        return JSONResponse(
            {
                "status": "unavailable",
                "detail": "the database is unreachable",
                "database": "unreachable",
                "error": type(exc).__name__,
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )
    if pending:
        return JSONResponse(
            {
                "status": "unavailable",
                "detail": "migrations are pending",
                "database": "ok",
                "pending_migrations": pending,
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return JSONResponse({"status": "ready", "database": "ok"})


@router.get("/v1/queues", response_model=None, responses=documented(Queues))
async def queues(st: AppState = Depends(state)) -> dict[str, Any]:
    """Depth, visible vs in flight, message ages, totals and dead letters of each queue."""
    return {
        "queues": await st.queue_stats.get(
            st.pool, acquire_timeout_s=st.settings.db_acquire_timeout_s
        )
    }


@router.get("/v1/workers", response_model=None, responses=documented(Workers))
async def list_workers(st: AppState = Depends(state)) -> dict[str, Any]:
    """Workers seen in the last hour; ``alive`` means a recent heartbeat."""
    async with st.acquire() as conn:
        rows = await workers.list_recent(
            conn, seen_within_s=3600, dead_after_s=st.settings.worker_dead_after_s
        )
    return {"workers": rows}
