"""/v1/events: write events (queued for embedding), read, patch metadata, delete."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import asyncpg
import numpy as np
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel
from starlette.responses import JSONResponse
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnemo_api import cursors
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
from mnemo_core import logging as mlog
from mnemo_core.db import in_transaction
from mnemo_core.errors import InvalidInput

router = APIRouter(prefix="/v1/events", tags=["events"])
log = mlog.get(__name__)

#: Expired idempotency keys are deleted at most this often per API process.
PURGE_EVERY_S = 60.0

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        description="Any unique string (a UUID, say) of 1 to 255 printable ASCII "
        'characters, in double quotes or not ("k" and k are the same key), given once. Sent '
        "again with the same request (a retry after a lost answer), it gets the first answer "
        "back, with `Idempotent-Replayed: true`, instead of storing the events twice; with "
        "another request, a 422. Kept for MNEMO_IDEMPOTENCY_TTL_S.",
        # Documented, not checked here: _key's 422 says what is wrong in our words.
        json_schema_extra={"minLength": 1, "maxLength": idempotency.MAX_KEY_CHARS + 2},
    ),
]
#: The answer's header on a replay, documented on both write routes.
_REPLAYED = {
    "Idempotent-Replayed": {
        "description": "true: the answer of an earlier request with the same Idempotency-Key;"
        " nothing was stored",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def _written(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {
        201: {"model": model, "description": "stored without queueing", "headers": _REPLAYED},
        202: {"description": "stored, its embedding queued", "headers": _REPLAYED},
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


async def _ingest(st: AppState, new: list[events.NewEvent]) -> events.Ingested:
    async with st.pool.acquire() as conn:  # one statement: atomic without BEGIN
        return await events.ingest(
            conn,
            new,
            model=st.settings.embedding_model,
            message_batch=st.settings.message_batch,
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


def _key(given: list[str]) -> str:
    """The key of the ``Idempotency-Key`` header lines ``given``: printable ASCII, in
    double quotes (the IETF draft's structured-field string) or not; one line."""
    if len(given) > 1:
        raise InvalidInput(f"header.{idempotency.HEADER}", "given more than once")
    raw = given[0]
    key = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    if not (1 <= len(key) <= idempotency.MAX_KEY_CHARS and key.isascii() and key.isprintable()):
        raise InvalidInput(
            f"header.{idempotency.HEADER}",
            f"must be 1 to {idempotency.MAX_KEY_CHARS} printable ASCII characters",
        )
    return key


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
    given = http.headers.getlist(idempotency.HEADER) if http is not None else []
    if not given:
        return answer_of(await _ingest(st, new))
    assert http is not None and body is not None
    claimed_key = _key(given)
    scope = f"{http.method} {http.url.path}"
    fingerprint = idempotency.fingerprint(body.model_dump(mode="json"))
    ttl_s = st.settings.idempotency_ttl_s

    async def once(conn: asyncpg.Connection) -> tuple[idempotency.Answer, bool]:
        first = await idempotency.claim(conn, scope, claimed_key, fingerprint, ttl_s=ttl_s)
        if first is not None:
            return first, True
        answer = answer_of(
            await events.ingest(
                conn,
                new,
                model=st.settings.embedding_model,
                message_batch=st.settings.message_batch,
            )
        )
        await idempotency.record(conn, scope, claimed_key, answer)
        return answer, False

    answer, replayed = await in_transaction(st.pool, once)
    if replayed and response is not None:
        response.headers["Idempotent-Replayed"] = "true"
    await _purge_expired_keys(st)
    return answer


async def _purge_expired_keys(st: AppState) -> None:
    """Delete expired idempotency keys, at most every PURGE_EVERY_S in this process (at
    once again after a purge that hit its batch limit). Best effort: the request's own
    answer is committed by now, and a purge that fails is tried again later."""
    now = time.monotonic()
    if now < st.idempotency_purge_at:
        return
    st.idempotency_purge_at = now + PURGE_EVERY_S  # before the await: one purge at a time
    try:
        async with st.pool.acquire() as conn:
            gone = await idempotency.purge(conn, ttl_s=st.settings.idempotency_ttl_s)
    except Exception as exc:  # never turns a stored write into an error
        log.warning("idempotency_purge_failed", error=str(exc) or type(exc).__name__)
        return
    if gone >= idempotency.PURGE_BATCH:
        st.idempotency_purge_at = 0.0


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
    idempotency_key: IdempotencyKey = None,  # documented; _accept reads every line of it
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
    idempotency_key: IdempotencyKey = None,  # documented; _accept reads every line of it
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
    async with st.pool.acquire() as conn:
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
    async with st.pool.acquire() as conn:
        return await events.get(conn, event_id)


@router.patch("/{event_id}/metadata", response_model=None, responses=documented(Event, "The event"))
async def patch_metadata(
    event_id: uuid.UUID, body: MetadataPatch, st: AppState = Depends(state)
) -> dict[str, Any]:
    """Merge keys into the event's metadata (top level; a key given replaces its value) after
    removing the keys listed in ``remove``."""
    async with st.pool.acquire() as conn:
        return await events.merge_metadata(conn, event_id, body.metadata, body.remove)


@router.delete("/{event_id}", status_code=204)
async def delete_event(event_id: uuid.UUID, st: AppState = Depends(state)) -> Response:
    await in_transaction(st.pool, lambda conn: events.delete(conn, event_id))
    return Response(status_code=204)
