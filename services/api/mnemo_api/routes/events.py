"""/v1/events: write events (queued for embedding), read, patch metadata, delete."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import asyncpg
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel
from starlette.responses import JSONResponse
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnemo_api import cursors, idempotent
from mnemo_api.answers import EmbeddingStatus, Event, EventPage, documented
from mnemo_api.schemas import (
    BatchAccepted,
    EventAccepted,
    EventBatchIn,
    EventFilters,
    EventIn,
    MetadataPatch,
)
from mnemo_api.state import AppState, state
from mnemo_core import events, idempotency

router = APIRouter(prefix="/v1/events", tags=["events"])

IdempotencyKey = Annotated[str | None, idempotent.header("storing the events twice")]


def _written(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {
        201: {
            "model": model,
            "description": "stored without queueing",
            "headers": idempotent.REPLAYED,
        },
        202: {"description": "stored, its embedding queued", "headers": idempotent.REPLAYED},
    }


def _to_new(ev: EventIn, dim: int, field: str) -> events.NewEvent:
    vec = None
    if ev.embedding is not None:
        if len(ev.embedding) != dim:
            raise HTTPException(
                422, f"{field}.embedding: has {len(ev.embedding)} dimensions; the model makes {dim}"
            )
        vec = np.asarray(ev.embedding, dtype=np.float32)
    return events.NewEvent(ev.content, ev.metadata, ev.timestamp, vec)


async def _ingest(
    conn: asyncpg.Connection, st: AppState, new: list[events.NewEvent]
) -> events.Ingested:
    return await events.ingest(
        conn, new, model=st.settings.embedding_model, message_batch=st.settings.message_batch
    )


def _one_answer(done: events.Ingested) -> idempotency.Answer:
    accepted = EventAccepted(
        event_id=str(done.event_ids[0]),
        job_id=str(done.job_id) if done.job_id else None,
        status="queued" if done.queued else "stored",
    )
    return idempotency.Answer(202 if done.queued else 201, accepted.model_dump())


def _batch_answer(done: events.Ingested) -> idempotency.Answer:
    accepted = BatchAccepted(
        job_id=str(done.job_id) if done.job_id else None,
        event_ids=[str(i) for i in done.event_ids],
        queued=done.queued,
        status="queued" if done.queued else "stored",
    )
    return idempotency.Answer(202 if done.queued else 201, accepted.model_dump())


async def _accept(
    st: AppState,
    new: list[events.NewEvent],
    answer_of: Callable[[events.Ingested], idempotency.Answer],
    *,
    http: Request | None = None,
    body: BaseModel | None = None,
    response: Response | None = None,
) -> idempotency.Answer:
    """Store the events (and queue them); when the request ``http`` carries an idempotency
    key, only the first time. The key is the route's (``POST /v1/events``); ``body``, as
    validated, is what identifies the request."""
    key = idempotent.key_of(http) if http is not None else None
    if key is None:
        async with st.acquire() as conn:  # one statement: atomic without BEGIN
            return answer_of(await _ingest(conn, st, new))
    assert body is not None and response is not None

    async def ingest(conn: asyncpg.Connection) -> idempotency.Answer:
        return answer_of(await _ingest(conn, st, new))

    fingerprint = idempotency.fingerprint(body.model_dump(mode="json"))
    return await idempotent.once(st, key, fingerprint, ingest, response)


@router.post(
    "",
    status_code=202,
    response_model=EventAccepted,
    responses=_written(EventAccepted),
)
async def create_event(
    body: EventIn,
    http: Request,
    response: Response,
    st: AppState = Depends(state),
    idempotency_key: IdempotencyKey = None,  # documented; key_of reads every line of it
) -> EventAccepted:
    """Store an event and queue its embedding (202), or store it at once (201) when it
    carries its own embedding or has no text to embed. With an ``Idempotency-Key``, a
    repeat of the request answers as the first one did and stores nothing."""
    answer = await _accept(
        st,
        [_to_new(body, st.settings.embedding_dim, "body")],
        _one_answer,
        http=http,
        body=body,
        response=response,
    )
    response.status_code = answer.status
    return EventAccepted.model_validate(answer.body)


_SLOW_PATH = "mnemo.slow_path"


class CreateEventFastPath(Route):
    """``POST /v1/events`` for a well-formed JSON event, without FastAPI's per-request
    machinery; anything else goes on to :func:`create_event`, which stays the documented
    route and the only one that answers errors.

    Why: single-event ingest is the API's hottest route, and the one process is CPU-bound
    on it. py-spy put FastAPI's own layers (route matching through included routers,
    dependency solving, body handling, response validation) at about a third of the
    API's CPU per request, more than the database round trip (bench/README.md, change 15).
    This does what that route does in the same order (``json.loads`` of the body, then
    ``EventIn`` validation, then :func:`_to_new`), so the two cannot disagree on what is
    valid: at the first thing it does not accept (another content type, bad JSON, a
    validation error, a wrong dimension) it hands the request, body replayed, to the
    router again, which then skips this route, and FastAPI answers as it always has.
    It runs inside every middleware (keys, body limit, metrics) and exception handler."""

    def __init__(self, router: ASGIApp) -> None:
        super().__init__("/v1/events", self._serve, methods=["POST"], include_in_schema=False)
        self.app = self._serve  # an ASGI app, not Starlette's request -> response wrapper
        self._router = router

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(_SLOW_PATH):
            return Match.NONE, {}
        match, child = super().matches(scope)
        if match is Match.FULL:
            child["route"] = self  # as FastAPI's routes do: /metrics labels it /v1/events
        return match, child

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away: nobody to answer
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        st: AppState = scope["app"].state.mnemo
        new = _accepted_event(scope, body, st.settings.embedding_dim)
        if new is None:
            scope[_SLOW_PATH] = True
            await self._router(scope, _replay(body, receive), send)
            return
        answer = await _accept(st, [new], _one_answer)
        await JSONResponse(answer.body, status_code=answer.status)(scope, receive, send)


def _accepted_event(scope: Scope, body: bytes, dim: int) -> events.NewEvent | None:
    """The event, when FastAPI's route would accept it as it is; else None."""
    if scope.get("query_string"):
        return None  # the route takes none: FastAPI's to refuse (params.known_query)
    ctype = b""
    for name, value in scope["headers"]:
        if name == b"content-type":
            ctype = value
        elif name == b"idempotency-key":
            return None  # the route's to claim (a transaction, not the hot path's statement)
    if ctype.split(b";", 1)[0].strip().lower() != b"application/json":
        return None
    try:
        return _to_new(EventIn.model_validate(json.loads(body)), dim, "body")
    except Exception:  # every refusal is FastAPI's to word, on the slow path
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


@router.post(
    "/batch",
    status_code=202,
    response_model=BatchAccepted,
    responses=_written(BatchAccepted),
)
async def create_events(
    body: EventBatchIn,
    http: Request,
    response: Response,
    st: AppState = Depends(state),
    idempotency_key: IdempotencyKey = None,  # documented; key_of reads every line of it
) -> BatchAccepted:
    """Store up to MNEMO_MAX_BATCH_EVENTS events under one job, queued in batched messages.
    With an ``Idempotency-Key``, a repeat of the request answers as the first one did."""
    limit = st.settings.max_batch_events
    if len(body.events) > limit:
        raise HTTPException(
            422, f"body.events: {len(body.events)} events; at most {limit} per batch"
        )
    dim = st.settings.embedding_dim
    answer = await _accept(
        st,
        [_to_new(ev, dim, f"body.events.{i}") for i, ev in enumerate(body.events)],
        _batch_answer,
        http=http,
        body=body,
        response=response,
    )
    response.status_code = answer.status
    return BatchAccepted.model_validate(answer.body)


@router.get("", response_model=None, responses=documented(EventPage))
async def list_events(
    st: AppState = Depends(state),
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    filter_metadata: Annotated[str | None, Query(max_length=8192)] = None,
    ts_start: dt.datetime | None = None,
    ts_end: dt.datetime | None = None,
    embedding_status: EmbeddingStatus | None = None,
) -> dict[str, Any]:
    """Events newest first by ``timestamp``, with the filters of search
    (``filter_metadata`` a JSON object the metadata must contain; ``ts_start`` and
    ``ts_end`` inclusive) and ``embedding_status``; pass ``next_cursor`` back as
    ``cursor`` for the next page (null on the last)."""
    filters = EventFilters(
        filter_metadata=filter_metadata,  # type: ignore[arg-type]  # parsed by a validator
        ts_start=ts_start,
        ts_end=ts_end,
    )  # a ValidationError here answers 422 naming the query parameter (errors.py)
    after = cursors.decode(cursor) if cursor else None
    async with st.acquire() as conn:
        rows = await events.list_page(
            conn,
            metadata=filters.filter_metadata,
            ts_start=filters.ts_start,
            ts_end=filters.ts_end,
            status=embedding_status,
            limit=limit + 1,
            after=after,
        )
    page = rows[:limit]
    nxt = cursors.encode(page[-1]["timestamp"], page[-1]["id"]) if len(rows) > limit else None
    return {"events": [events.to_json(r) for r in page], "next_cursor": nxt}


@router.get("/{event_id}", response_model=None, responses=documented(Event))
async def get_event(event_id: uuid.UUID, st: AppState = Depends(state)) -> dict[str, Any]:
    async with st.acquire() as conn:
        return await events.get(conn, event_id)


@router.patch("/{event_id}/metadata", response_model=None, responses=documented(Event, "The event"))
async def patch_metadata(
    event_id: uuid.UUID, body: MetadataPatch, st: AppState = Depends(state)
) -> dict[str, Any]:
    """Merge keys into the event's metadata (top level; a key given replaces its value) after
    removing the keys listed in ``remove``."""
    async with st.acquire() as conn:
        return await events.merge_metadata(conn, event_id, body.metadata, body.remove)


@router.delete("/{event_id}", status_code=204)
async def delete_event(event_id: uuid.UUID, st: AppState = Depends(state)) -> Response:
    await st.transaction(lambda conn: events.delete(conn, event_id))
    return Response(status_code=204)
