"""/v1/search: cosine similarity over events, with metadata and time filters."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query

from mnemo_api.answers import SearchResults, documented
from mnemo_api.schemas import SearchIn
from mnemo_api.state import AppState, state
from mnemo_core import events

router = APIRouter(prefix="/v1/search", tags=["search"])


async def _search(body: SearchIn, st: AppState) -> dict[str, Any]:
    started = time.perf_counter()
    dim = st.settings.embedding_dim
    if body.vector is not None:
        if len(body.vector) != dim:
            raise HTTPException(
                422, f"body.vector: has {len(body.vector)} dimensions; the model makes {dim}"
            )
        vec = np.asarray(body.vector, dtype=np.float32)
    else:
        assert body.q is not None
        vec = await st.query_embedder.embed(body.q)
    embedded = time.perf_counter()
    async with st.acquire() as conn:
        results = await events.search(
            conn,
            vec,
            model=st.settings.embedding_model,
            limit=body.limit,
            metadata=body.filter_metadata,
            ts_start=body.ts_start,
            ts_end=body.ts_end,
            ef_search=st.settings.search_ef,
            exact_below_bytes=int(st.settings.search_exact_below_mb * 1024 * 1024),
        )
    return {
        "results": results,
        "count": len(results),
        "model": st.settings.embedding_model,
        "took_ms": {
            "embed": round((embedded - started) * 1000, 2),
            "total": round((time.perf_counter() - started) * 1000, 2),
        },
    }


@router.get("", response_model=None, responses=documented(SearchResults))
async def search_get(
    q: Annotated[str, Query(min_length=1, max_length=8192)],
    st: AppState = Depends(state),
    limit: Annotated[int, Query(ge=1, le=200)] = 10,
    filter_metadata: Annotated[str | None, Query(max_length=8192)] = None,
    ts_start: dt.datetime | None = None,
    ts_end: dt.datetime | None = None,
) -> dict[str, Any]:
    """Text search: ``filter_metadata`` is a JSON object the metadata must contain."""
    body = SearchIn(
        q=q,
        limit=limit,
        filter_metadata=filter_metadata,  # type: ignore[arg-type]  # parsed by a validator
        ts_start=ts_start,
        ts_end=ts_end,
    )  # a ValidationError here answers 422 naming the query parameter (errors.py)
    return await _search(body, st)


@router.post("", response_model=None, responses=documented(SearchResults))
async def search_post(body: SearchIn, st: AppState = Depends(state)) -> dict[str, Any]:
    """Search by text (``q``) or by ``vector``, with the same filters."""
    return await _search(body, st)
