"""/v1/jobs: poll, list, retry, cancel."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query

from mnemo_api import cursors
from mnemo_api.answers import Job, JobPage, RetriedJob, documented
from mnemo_api.state import AppState, state
from mnemo_core import code, jobs

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
# What makes jobs: events to embed (mnemo_core.events) and uploads to index (code.INDEX_JOB).
Kind = Literal["embed_events", "index_repository"]


@router.get("/{job_id}", response_model=None, responses=documented(Job))
async def get_job(job_id: uuid.UUID, st: AppState = Depends(state)) -> dict[str, Any]:
    """Status, progress {total, done, failed}, attempts, error, timestamps, failed items."""
    async with st.acquire() as conn:
        job = await jobs.get(conn, job_id)
        if job["kind"] == code.INDEX_JOB:
            job["detail"] = await code.job_detail(conn, job_id)
    return job


@router.get("", response_model=None, responses=documented(JobPage))
async def list_jobs(
    st: AppState = Depends(state),
    status: Status | None = None,
    kind: Kind | None = None,
    limit: int = Query(default=20, ge=1, le=200),
    cursor: str | None = Query(default=None, max_length=200),
) -> dict[str, Any]:
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    after = cursors.decode(cursor) if cursor else None
    async with st.acquire() as conn:
        rows = await jobs.list_page(conn, status=status, kind=kind, limit=limit + 1, after=after)
    page = rows[:limit]
    nxt = cursors.encode(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit else None
    return {"jobs": [jobs.to_json(r) for r in page], "next_cursor": nxt}


@router.post(
    "/{job_id}/retry", response_model=None, responses=documented(RetriedJob, "The job, re-opened")
)
async def retry_job(job_id: uuid.UUID, st: AppState = Depends(state)) -> dict[str, Any]:
    """Re-queue the failed items of a failed job (and the skipped ones of a cancelled job)."""
    return await st.transaction(
        lambda conn: jobs.retry(conn, job_id, message_batch=st.settings.message_batch)
    )


@router.post(
    "/{job_id}/cancel", response_model=None, responses=documented(Job, "The job, cancelled")
)
async def cancel_job(job_id: uuid.UUID, st: AppState = Depends(state)) -> dict[str, Any]:
    """Stop a queued or running job: workers drop its remaining items."""
    async with st.acquire() as conn:
        return await jobs.cancel(conn, job_id)
