"""/v1/events: write events (queued for embedding), read, patch metadata, delete."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Response

from mnemo_api.schemas import (
    BatchAccepted,
    EventAccepted,
    EventBatchIn,
    EventIn,
    MetadataPatch,
)
from mnemo_api.state import AppState, state
from mnemo_core import events
from mnemo_core.db import transaction

router = APIRouter(prefix="/v1/events", tags=["events"])


def _to_new(ev: EventIn, dim: int, field: str) -> events.NewEvent:
    vec = None
    if ev.embedding is not None:
        if len(ev.embedding) != dim:
            raise HTTPException(
                422, f"{field}.embedding: has {len(ev.embedding)} dimensions; the model makes {dim}"
            )
        vec = np.asarray(ev.embedding, dtype=np.float32)
    return events.NewEvent(ev.content, ev.metadata, ev.timestamp, vec)


@router.post(
    "",
    status_code=202,
    response_model=EventAccepted,
    responses={201: {"model": EventAccepted, "description": "stored without queueing"}},
)
async def create_event(
    body: EventIn, response: Response, st: AppState = Depends(state)
) -> EventAccepted:
    """Store an event and queue its embedding (202), or store it at once (201) when it
    carries its own embedding or has no text to embed."""
    new = _to_new(body, st.settings.embedding_dim, "body")
    async with st.pool.acquire() as conn:  # one statement: atomic without BEGIN
        done = await events.ingest(
            conn,
            [new],
            model=st.settings.embedding_model,
            message_batch=st.settings.message_batch,
        )
    if not done.queued:
        response.status_code = 201
    return EventAccepted(
        event_id=str(done.event_ids[0]),
        job_id=str(done.job_id) if done.job_id else None,
        status="queued" if done.queued else "stored",
    )


@router.post(
    "/batch",
    status_code=202,
    response_model=BatchAccepted,
    responses={201: {"model": BatchAccepted, "description": "stored without queueing"}},
)
async def create_events(
    body: EventBatchIn, response: Response, st: AppState = Depends(state)
) -> BatchAccepted:
    """Store up to MNEMO_MAX_BATCH_EVENTS events under one job, queued in batched messages."""
    limit = st.settings.max_batch_events
    if len(body.events) > limit:
        raise HTTPException(
            422, f"body.events: {len(body.events)} events; at most {limit} per batch"
        )
    dim = st.settings.embedding_dim
    new = [_to_new(ev, dim, f"body.events.{i}") for i, ev in enumerate(body.events)]
    async with st.pool.acquire() as conn:  # one statement: atomic without BEGIN
        done = await events.ingest(
            conn,
            new,
            model=st.settings.embedding_model,
            message_batch=st.settings.message_batch,
        )
    if not done.queued:
        response.status_code = 201
    return BatchAccepted(
        job_id=str(done.job_id) if done.job_id else None,
        event_ids=[str(i) for i in done.event_ids],
        queued=done.queued,
        status="queued" if done.queued else "stored",
    )


@router.get("/{event_id}")
async def get_event(event_id: uuid.UUID, st: AppState = Depends(state)) -> dict[str, Any]:
    async with st.pool.acquire() as conn:
        return await events.get(conn, event_id)


@router.patch("/{event_id}/metadata")
async def patch_metadata(
    event_id: uuid.UUID, body: MetadataPatch, st: AppState = Depends(state)
) -> dict[str, Any]:
    """Merge keys into the event's metadata (top level; a key given replaces its value)."""
    async with st.pool.acquire() as conn:
        return await events.merge_metadata(conn, event_id, body.metadata)


@router.delete("/{event_id}", status_code=204)
async def delete_event(event_id: uuid.UUID, st: AppState = Depends(state)) -> Response:
    async with transaction(st.pool) as conn:
        await events.delete(conn, event_id)
    return Response(status_code=204)
