"""Job bookkeeping: what a user polls. Counters move through ``mnemo_job_progress`` in the
same transaction as the results they count."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Redo:
    """How to put one kind of item back to work: the statement that moves failed or
    cancelled items to pending, the one listing cancelled items, and where they queue."""

    requeue: str
    cancelled: str
    queue: str
    ints: bool  # ids are bigints in the database


_REDO = {
    "event": _Redo("requeue_events", "cancelled_events_of_job", queue.EMBED, False),
    "chunk": _Redo("requeue_chunks", "cancelled_chunks_of_job", queue.EMBED, True),
    "file": _Redo("requeue_files", "cancelled_files_of_job", queue.INDEX, True),
}
FILES_PER_MESSAGE = 16


async def retry(
    conn: asyncpg.Connection, job_id: uuid.UUID, *, message_batch: int
) -> dict[str, Any]:
    """Re-queue the failed items of a failed job (and the cancelled ones of a cancelled
    job), whatever their kind. Runs in the caller's transaction: the items are pending
    again iff their messages exist."""
    job = await conn.fetchrow(Q["lock_job"], job_id)
    if job is None:
        raise NotFound("job", job_id)
    if job["status"] not in ("failed", "cancelled"):
        raise Conflict(f"job {job_id} is {job['status']}; only failed or cancelled jobs retry")
    total, n_failed = 0, 0
    for kind, redo in _REDO.items():
        failed_ids = [r["item_id"] for r in await conn.fetch(Q["take_failures"], job_id, kind)]
        ids = list(failed_ids)
        if job["status"] == "cancelled":
            ids += [str(r["id"]) for r in await conn.fetch(Q[redo.cancelled], job_id)]
        if not ids:
            continue
        rows = await conn.fetch(
            Q[redo.requeue], [int(i) for i in ids] if redo.ints else ids, job_id
        )
        requeued = [r["id"] for r in rows]
        n_failed += len(set(failed_ids) & set(requeued))
        total += len(requeued)
        if kind == "file":
            await conn.execute(Q["forget_failed_files"], job_id, [r["path"] for r in rows])
        per_msg = FILES_PER_MESSAGE if kind == "file" else message_batch
        await queue.send_many(
            conn,
            redo.queue,
            [EmbedMessage(job_id, kind, tuple(b)).to_json() for b in chunked(requeued, per_msg)],
        )
    if not total and job["failed"]:
        # Its failed items were deleted since: re-opening it would only settle it as failed
        # again, its error gone. The caller's transaction rolls back what was taken.
        raise Conflict(f"job {job_id} has nothing to retry: its failed items no longer exist")
    row = await conn.fetchrow(Q["reopen_job"], job_id, n_failed)
    if not total:
        # Nothing to redo and nothing failed (a cancel that came after its last item, or
        # whose waiting items were deleted): settle the job now.
        await progress(conn, job_id)
        row = await conn.fetchrow(Q["get_job"], job_id)
    out = to_json(row)
    out["requeued"] = total
    return out
