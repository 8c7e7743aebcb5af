"""Events: MnemoLite's memory rows. Data access named by intent."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
from pgvector import Vector

from mnemo_core import jobs, queue
from mnemo_core.errors import NotFound
from mnemo_core.items import SqlItemStore
from mnemo_core.messages import EmbedMessage, chunked
from mnemo_core.queries import Q
from mnemo_core.text import event_text


@dataclass(frozen=True)
class NewEvent:
    content: dict[str, Any]
    metadata: dict[str, Any]
    timestamp: dt.datetime | None
    embedding: np.ndarray | None


@dataclass(frozen=True)
class Ingested:
    job_id: uuid.UUID | None
    event_ids: list[uuid.UUID]
    queued: int


def to_json(row: asyncpg.Record, score: float | None = None) -> dict[str, Any]:
    out = {
        "id": str(row["id"]),
        "timestamp": row["timestamp"].isoformat(),
        "content": row["content"],
        "metadata": row["metadata"],
        "embedding_model": row["embedding_model"],
        "embedding_status": row["embedding_status"],
        "job_id": str(row["job_id"]) if row["job_id"] else None,
        "created_at": row["created_at"].isoformat(),
    }
    if "embedding_error" in row.keys():
        out["embedding_error"] = row["embedding_error"]
    if score is not None:
        out["score"] = score
    return out


def _uuid4s(n: int) -> list[uuid.UUID]:
    """``n`` random (version 4) UUIDs from one read of the OS's random source, where
    ``uuid.uuid4()`` reads it once each: a system call per event (bench/README.md)."""
    raw = os.urandom(16 * n)
    return [uuid.UUID(bytes=raw[i : i + 16], version=4) for i in range(0, 16 * n, 16)]


async def ingest(
    conn: asyncpg.Connection,
    items: Sequence[NewEvent],
    *,
    model: str,
    message_batch: int,
    job_kind: str = "embed_events",
) -> Ingested:
    """Insert events and queue the ones that need an embedding, in one statement (atomic on
    its own, or part of the caller's transaction): a job exists iff its work is queued."""
    now = dt.datetime.now(dt.UTC)
    ids = _uuid4s(len(items))
    statuses: list[str] = []
    models: list[str | None] = []
    to_queue: list[str] = []
    for ident, ev in zip(ids, items, strict=True):
        if ev.embedding is not None:
            statuses.append("done")
            models.append(model)
        elif event_text(ev.content) is None:
            statuses.append("skipped")
            models.append(None)
        else:
            statuses.append("pending")
            models.append(None)
            to_queue.append(str(ident))
    rows = (
        ids,
        [ev.timestamp or now for ev in items],
        [ev.content for ev in items],
        [ev.metadata for ev in items],
        [Vector(ev.embedding) if ev.embedding is not None else None for ev in items],
        models,
        statuses,
    )
    if not to_queue:  # nothing to embed: no job, no message
        await conn.execute(Q["insert_events"], *rows, None)
        return Ingested(None, ids, 0)
    job_id = uuid.UUID(bytes=os.urandom(16), version=4)
    messages = [
        EmbedMessage(job_id, "event", tuple(b)).to_json() for b in chunked(to_queue, message_batch)
    ]
    await conn.execute(
        Q["ingest_events"],
        job_id,
        job_kind,
        len(to_queue),
        {"events": len(items)},
        *rows,
        queue.EMBED,
        messages,
    )
    return Ingested(job_id, ids, len(to_queue))


async def get(conn: asyncpg.Connection, event_id: uuid.UUID) -> dict[str, Any]:
    row = await conn.fetchrow(Q["get_event"], event_id)
    if row is None:
        raise NotFound("event", event_id)
    return to_json(row)


async def list_page(
    conn: asyncpg.Connection,
    *,
    metadata: dict[str, Any] | None,
    ts_start: dt.datetime | None,
    ts_end: dt.datetime | None,
    status: str | None,
    limit: int,
    after: tuple[dt.datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    """Up to ``limit`` events, newest first by ``timestamp``, after the cursor ``after``
    (the timestamp and id of the last event of the page before)."""
    at, ident = after if after else (None, None)
    return list(
        await conn.fetch(Q["list_events"], metadata, ts_start, ts_end, status, at, ident, limit)
    )


async def merge_metadata(
    conn: asyncpg.Connection,
    event_id: uuid.UUID,
    patch: dict[str, Any],
    remove: list[str] | None = None,
) -> dict[str, Any]:
    """Remove the keys ``remove``, then merge ``patch`` in (top level)."""
    row = await conn.fetchrow(Q["merge_event_metadata"], event_id, patch, remove or [])
    if row is None:
        raise NotFound("event", event_id)
    return to_json(row)


async def delete(conn: asyncpg.Connection, event_id: uuid.UUID) -> None:
    """Delete an event; one still waiting for its embedding leaves its job's total."""
    row = await conn.fetchrow(Q["delete_event"], event_id)
    if row is None:
        raise NotFound("event", event_id)
    if row["job_id"] is not None and row["embedding_status"] == "pending":
        await jobs.progress(conn, row["job_id"], total=-1)


async def search(
    conn: asyncpg.Connection,
    vector: np.ndarray,
    *,
    model: str,
    limit: int,
    metadata: dict[str, Any] | None,
    ts_start: dt.datetime | None,
    ts_end: dt.datetime | None,
    ef_search: int,
    exact_below_bytes: int = 0,
) -> list[dict[str, Any]]:
    """Nearest events first; an exact scan while the table is smaller than
    ``exact_below_bytes``, else the HNSW index."""
    async with conn.transaction():
        # Iterative scans keep HNSW recall when filters discard many neighbours (pgvector 0.8).
        # One round trip for both settings (a simple query may hold several statements).
        # No parallel workers: the plan of the exact branch (search_events) has a Gather,
        # which starts its workers, ~8 ms, even when that branch's one-time filter is false.
        await conn.execute(
            f"SET LOCAL hnsw.ef_search = {max(int(ef_search), limit)}; "
            "SET LOCAL hnsw.iterative_scan = relaxed_order; "
            "SET LOCAL max_parallel_workers_per_gather = 0"
        )
        rows = await conn.fetch(
            Q["search_events"],
            vector,
            model,
            metadata,
            ts_start,
            ts_end,
            limit,
            exact_below_bytes,
        )
    # relaxed_order may return rows slightly out of order; put them back by score.
    return sorted(
        (to_json(r, float(r["score"])) for r in rows), key=lambda e: e["score"], reverse=True
    )


class EventStore(SqlItemStore):
    """The embedder's view of events."""

    kind = "event"
    load_query = "events_to_embed"
    store_query = "store_event_embeddings"
    settle_query = "settle_events"

    def text(self, row: asyncpg.Record) -> str | None:
        return event_text(row["content"])
