"""The shapes of the answers of the event, search and job routes, for the OpenAPI document.

The routes build their answers as dicts (mnemo_core's ``to_json``) and declare these with
``responses=`` rather than ``response_model=``: validating and re-serializing every answer
would cost the hot routes time for nothing the tests do not already check. The tests
validate real answers against these models (``additionalProperties: false``, so a field
added to an answer and not here fails them), and schemathesis checks the live ones."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EmbeddingStatus = Literal["pending", "done", "skipped", "failed", "cancelled"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _EventFields(_Answer):
    id: uuid.UUID
    timestamp: dt.datetime
    content: dict[str, Any]
    metadata: dict[str, Any]
    embedding_model: str | None = Field(description="the model of its vector, once it has one")
    embedding_status: EmbeddingStatus
    job_id: uuid.UUID | None = Field(description="the job that embeds it, if one did")
    created_at: dt.datetime


class Event(_EventFields):
    embedding_error: str | None = Field(description="why its embedding failed")


class EventPage(_Answer):
    events: list[Event]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class Hit(_EventFields):
    score: float = Field(description="cosine similarity, -1 to 1; higher is closer")


class Took(_Answer):
    embed: float = Field(description="milliseconds to embed the query text (0 for a vector)")
    total: float


class SearchResults(_Answer):
    results: list[Hit]
    count: int
    model: str
    took_ms: Took


class Progress(_Answer):
    total: int
    done: int
    failed: int


class ItemFailure(_Answer):
    item_kind: Literal["event", "chunk", "file"]
    item_id: str
    error: str
    attempts: int
    failed_at: dt.datetime


class Counted(_Answer):
    failed: int
    total: int


class FilesDone(Counted):
    parsed: int


class ChunksDone(Counted):
    embedded: int


class IndexDetail(_Answer):
    files: FilesDone
    chunks: ChunksDone


class Job(_Answer):
    id: uuid.UUID
    kind: Literal["embed_events", "index_repository"]
    status: JobStatus
    progress: Progress
    attempts: int
    error: str | None
    params: dict[str, Any] | None
    result: dict[str, Any] | None
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    failures: list[ItemFailure] | None = Field(
        default=None, description="its failed items, newest first (GET of one job only)"
    )
    detail: IndexDetail | None = Field(
        default=None, description="live file and chunk counts (GET of an index job only)"
    )


class RetriedJob(Job):
    requeued: int = Field(description="items put back to work")


class JobPage(_Answer):
    jobs: list[Job]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


def documented(model: type[BaseModel], description: str = "OK") -> dict[int | str, Any]:
    """``responses=`` for a route answering ``model`` with 200."""
    return {200: {"model": model, "description": description}}
