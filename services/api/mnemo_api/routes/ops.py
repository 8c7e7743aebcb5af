"""Health, readiness, queues and workers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from mnemo_api.state import AppState, state
from mnemo_core import migrate, workers
from mnemo_core.queries import Q

router = APIRouter(tags=["operations"])


@router.get("/health")
@router.head("/health", include_in_schema=False)  # monitors that probe with HEAD
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/ready")
@router.head("/ready", include_in_schema=False)
async def ready(st: AppState = Depends(state)) -> JSONResponse:
    """The database answers and every migration is applied."""
    try:
        async with st.pool.acquire(timeout=3) as conn:
            await conn.fetchval(Q["ping"])
            pending = await migrate.pending(conn)
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


@router.get("/v1/queues")
async def queues(st: AppState = Depends(state)) -> dict[str, Any]:
    """Depth, visible vs in flight, message ages, totals and dead letters of each queue."""
    return {"queues": await st.queue_stats.get(st.pool)}


@router.get("/v1/workers")
async def list_workers(st: AppState = Depends(state)) -> dict[str, Any]:
    """Workers seen in the last hour; ``alive`` means a recent heartbeat."""
    async with st.pool.acquire() as conn:
        rows = await workers.list_recent(
            conn, seen_within_s=3600, dead_after_s=st.settings.worker_dead_after_s
        )
    return {"workers": rows}
