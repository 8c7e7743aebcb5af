"""Job bookkeeping: what a user polls. Counters move through ``mnemo_job_progress`` in the
same transaction as the results they count."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg

from mnemo_core import queue
from mnemo_core.errors import Conflict, NotFound
from mnemo_core.messages import EmbedMessage, chunked
from mnemo_core.queries import Q

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")


def to_json(job: asyncpg.Record, failures: list[asyncpg.Record] | None = None) -> dict[str, Any]:
    out = {
        "id": str(job["id"]),
        "kind": job["kind"],
        "status": job["status"],
        "progress": {"total": job["total"], "done": job["done"], "failed": job["failed"]},
        "attempts": job["attempts"],
        "error": job["error"],
        "params": job["params"],
        "result": job["result"],
        "created_at": job["created_at"].isoformat(),
        "updated_at": job["updated_at"].isoformat(),
        "started_at": job["started_at"].isoformat() if job["started_at"] else None,
        "finished_at": job["finished_at"].isoformat() if job["finished_at"] else None,
    }
    if failures is not None:
        out["failures"] = [
            {
                "item_kind": f["item_kind"],
                "item_id": f["item_id"],
                "error": f["error"],
                "attempts": f["attempts"],
                "failed_at": f["failed_at"].isoformat(),
            }
            for f in failures
        ]
    return out


async def create(
    conn: asyncpg.Connection, kind: str, total: int, params: dict[str, Any] | None = None
) -> uuid.UUID:
    return await conn.fetchval(Q["create_job"], kind, total, params or {})


async def get(
    conn: asyncpg.Connection, job_id: uuid.UUID, *, failures: int = 100
) -> dict[str, Any]:
    job = await conn.fetchrow(Q["get_job"], job_id)
    if job is None:
        raise NotFound("job", job_id)
    fails = await conn.fetch(Q["job_failures"], job_id, failures) if job["failed"] else []
    return to_json(job, list(fails))


async def list_page(
    conn: asyncpg.Connection,
    *,
    status: str | None,
    kind: str | None,
    limit: int,
    after: tuple[dt.datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    created, ident = after if after else (None, None)
    return list(await conn.fetch(Q["list_jobs"], status, kind, created, ident, limit))


async def progress(
    conn: asyncpg.Connection,
    job_id: uuid.UUID,
    *,
    done: int = 0,
    failed: int = 0,
    total: int = 0,
    error: str | None = None,
    attempts: int = 0,
) -> None:
    await conn.execute(Q["job_progress"], job_id, done, failed, total, error, attempts)


async def record_failures(
    conn: asyncpg.Connection,
    job_id: uuid.UUID,
    item_kind: str,
    item_ids: Iterable[str],
    error: str,
    attempts: int,
) -> None:
    await conn.executemany(
        Q["record_failure"],
        [(job_id, item_kind, str(i), error[:4000], attempts) for i in item_ids],
    )


async def cancel(conn: asyncpg.Connection, job_id: uuid.UUID) -> dict[str, Any]:
    """Cancel a queued or running job. Workers skip the remaining items of a cancelled job."""
    row = await conn.fetchrow(Q["cancel_job"], job_id)
    if row is None:
        current = await conn.fetchrow(Q["get_job"], job_id)
        if current is None:
            raise NotFound("job", job_id)
        raise Conflict(f"job {job_id} is {current['status']}; only queued or running jobs cancel")
    return to_json(row)


async def retry_events(
    conn: asyncpg.Connection, job_id: uuid.UUID, *, message_batch: int
) -> dict[str, Any]:
    """Re-queue the failed (and, for a cancelled job, the cancelled) events of a job.
    Runs in the caller's transaction: the items are pending again iff their messages exist."""
    job = await conn.fetchrow(Q["lock_job"], job_id)
    if job is None:
        raise NotFound("job", job_id)
    if job["status"] not in ("failed", "cancelled"):
        raise Conflict(f"job {job_id} is {job['status']}; only failed or cancelled jobs retry")
    failed_ids = [r["item_id"] for r in await conn.fetch(Q["take_failures"], job_id, "event")]
    ids = list(failed_ids)
    if job["status"] == "cancelled":
        ids += [str(r["id"]) for r in await conn.fetch(Q["cancelled_events_of_job"], job_id)]
    requeued = [str(r["id"]) for r in await conn.fetch(Q["requeue_events"], ids, job_id)]
    n_failed = len(set(failed_ids) & set(requeued))
    row = await conn.fetchrow(Q["reopen_job"], job_id, n_failed)
    await queue.send_many(
        conn,
        queue.EMBED,
        [
            EmbedMessage(job_id, "event", tuple(b)).to_json()
            for b in chunked(requeued, message_batch)
        ],
    )
    if not requeued:
        # Nothing left to redo (e.g. the failed items were deleted): settle the job now.
        await progress(conn, job_id)
        row = await conn.fetchrow(Q["get_job"], job_id)
    out = to_json(row)
    out["requeued"] = len(requeued)
    return out
