"""/v1/dlq: dead letters, listed without consuming them, and replayed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from mnemo_api.answers import DeadLetters, Replayed, documented
from mnemo_api.state import AppState, state
from mnemo_core import dlq

router = APIRouter(prefix="/v1/dlq", tags=["operations"])


# Strict: JSON true is not message 1 (it replayed it), nor "1".
MsgId = Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[MsgId] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="dead-letter message ids; omit (or send no body) to replay every one",
    )


@router.get("/{queue}", response_model=None, responses=documented(DeadLetters))
async def list_dead_letters(
    queue: str,
    st: AppState = Depends(state),
    after: int = Query(default=0, ge=0, le=2**63 - 1, description="list ids above this one"),
    limit: int = Query(default=50, ge=1, le=500),
) -> dict[str, Any]:
    """Dead letters of ``embed_dlq`` or ``index_dlq`` (``embed`` / ``index`` work too), oldest
    first, each with its error and original message. Reading does not consume them."""
    async with st.acquire() as conn:
        return await dlq.list_letters(conn, queue, after=after, limit=limit)


@router.post("/{queue}/replay", response_model=None, responses=documented(Replayed))
async def replay_dead_letters(
    queue: str, body: ReplayRequest | None = None, st: AppState = Depends(state)
) -> dict[str, Any]:
    """Send dead letters back to their queue: their failed items become pending again and
    their jobs re-open. Messages of cancelled jobs stay (``skipped``); retry the job instead."""
    ids = body.ids if body is not None else None
    replayed = await dlq.replay(
        st.pool, queue, ids, acquire_timeout_s=st.settings.db_acquire_timeout_s
    )
    return replayed.to_json()
