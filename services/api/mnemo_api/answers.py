"""The shapes of the answers of the API's routes, for the OpenAPI document.

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


class SkippedFile(_Answer):
    path: str
    reason: str


class IndexAccepted(_Answer):
    job_id: uuid.UUID
    repository: str
    files: int = Field(description="files in the request")
    files_changed: int = Field(description="new or changed: parsed by this job")
    files_unchanged: int
    files_removed: int = Field(description="removed by prune")
    skipped: list[SkippedFile] = Field(description="archive members not indexed, and why")


class CodeScores(_Answer):
    lexical: float | None
    vector: float | None
    fused: float


class CodeHit(_Answer):
    id: int
    repository: str
    path: str
    language: str
    start_line: int
    end_line: int
    kind: str
    name: str
    qualified_name: str
    signature: str
    docstring: str
    snippet: str
    scores: CodeScores


class CodeResults(_Answer):
    results: list[CodeHit]
    count: int
    mode: Literal["hybrid", "lexical", "vector"]
    notes: list[str] = Field(description="e.g. why a hybrid search fell back to lexical")
    took_ms: float


class Definition(_Answer):
    path: str
    start_line: int
    end_line: int


class Caller(_Answer):
    qualified_name: str
    path: str | None
    line: int | None
    call_line: int | None


class Callee(Caller):
    resolved: bool = Field(description="false: a name outside the repository")


class SymbolAnswer(_Answer):
    repository: str
    qualified_name: str
    name: str
    kind: str
    language: str
    path: str
    start_line: int
    end_line: int
    signature: str
    docstring: str
    parent: str | None
    complexity: int
    definitions: list[Definition]
    callers: list[Caller]
    callees: list[Callee]


class Node(_Answer):
    qualified_name: str
    depth: int


class Edge(_Answer):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    relationship: Literal["calls", "contains", "imports"]
    resolved: bool


class Traversal(_Answer):
    repository: str
    start: str
    direction: Literal["in", "out", "both"]
    nodes: list[Node]
    edges: list[Edge]
    truncated: bool = Field(description="the walk stopped at its node limit")


class Step(_Answer):
    qualified_name: str
    path: str | None
    line: int | None


class CallPath(_Answer):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    repository: str
    from_: str = Field(alias="from")
    to: str
    path: list[Step] | None = Field(description="null: no chain within max_depth")
    hops: int | None


class Repository(_Answer):
    name: str
    files: int
    files_failed: int
    chunks: int
    symbols: int
    edges: int
    languages: dict[str, int] = Field(description="files per language")
    embedding_coverage: float | None = Field(description="embedded chunks / chunks")
    last_indexed_at: dt.datetime | None
    last_commit: str | None
    last_job_id: uuid.UUID | None
    created_at: dt.datetime


class Repositories(_Answer):
    repositories: list[Repository]


class Health(_Answer):
    status: Literal["ok"]


class Ready(_Answer):
    status: Literal["ready"]
    database: Literal["ok"]


class QueueFigures(_Answer):
    queue: str
    depth: int = Field(description="messages in the queue, visible or in flight")
    visible: int = Field(description="waiting to be read")
    in_flight: int = Field(description="read and not yet acknowledged")
    oldest_age_s: int | None
    newest_age_s: int | None
    total_messages: int = Field(description="ever sent")
    dead_letters: int | None


class Queues(_Answer):
    queues: list[QueueFigures]


class Worker(_Answer):
    id: str
    kind: str
    host: str
    pid: int
    version: str
    started_at: dt.datetime
    last_heartbeat: dt.datetime
    stopped_at: dt.datetime | None
    processed: int
    failed: int
    batch_size: int = Field(description="items in its current batch (0: idle)")
    alive: bool = Field(description="a heartbeat within MNEMO_WORKER_DEAD_AFTER_S")


class Workers(_Answer):
    workers: list[Worker]


class DeadLetter(_Answer):
    """A dead letter as stored; the fields read from its message are null (or whatever
    the message held) when a producer other than MnemoLite wrote something else."""

    id: int
    dead_lettered_at: dt.datetime
    queue: Any = Field(description="the queue it failed on")
    original_msg_id: Any
    attempts: Any = Field(description="deliveries before it was dead-lettered")
    error: Any
    job_id: Any
    kind: Any
    items: int | None
    message: Any = Field(description="the original message")


class DeadLetters(_Answer):
    queue: str
    source: str
    messages: list[DeadLetter]
    next_after: int | None = Field(description="pass as `after` for the next page")


class Unreplayed(_Answer):
    id: int
    reason: str


class Replayed(_Answer):
    queue: str
    replayed: int
    replayed_ids: list[int]
    requeued_items: int
    skipped: list[Unreplayed]
    not_found: list[int]


def documented(
    model: type[BaseModel], description: str = "OK", status: int = 200
) -> dict[int | str, Any]:
    """``responses=`` for a route answering ``model`` with ``status``."""
    return {status: {"model": model, "description": description}}
