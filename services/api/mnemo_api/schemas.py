"""Request and response bodies. Validation lives here; routes stay short."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _aware(ts: dt.datetime | None) -> dt.datetime | None:
    """Naive timestamps are taken as UTC."""
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=dt.UTC)
    return ts


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: dict[str, Any] = Field(
        description="The event; its text is the first non-empty of "
        "content.text|body|message|content|title"
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    timestamp: dt.datetime | None = None
    embedding: list[float] | None = Field(
        default=None, description="A vector of the configured dimension skips the queue"
    )

    @field_validator("timestamp")
    @classmethod
    def _tz(cls, v: dt.datetime | None) -> dt.datetime | None:
        return _aware(v)

    @field_validator("embedding")
    @classmethod
    def _finite(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(math.isfinite(x) for x in v):
            raise ValueError("embedding values must be finite numbers")
        return v


class EventBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1)


class EventAccepted(BaseModel):
    event_id: str
    job_id: str | None
    status: Literal["queued", "stored"]


class BatchAccepted(BaseModel):
    job_id: str | None
    event_ids: list[str]
    queued: int
    status: Literal["queued", "stored"]


class MetadataPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metadata: dict[str, Any]


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    q: str | None = Field(default=None, min_length=1, max_length=8192)
    vector: list[float] | None = None
    limit: int = Field(default=10, ge=1, le=200)
    filter_metadata: dict[str, Any] | None = None
    ts_start: dt.datetime | None = None
    ts_end: dt.datetime | None = None

    @field_validator("ts_start", "ts_end")
    @classmethod
    def _tz(cls, v: dt.datetime | None) -> dt.datetime | None:
        return _aware(v)

    @field_validator("filter_metadata", mode="before")
    @classmethod
    def _json_text(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError as exc:
                raise ValueError(f"filter_metadata is not valid JSON: {exc}") from exc
            if not isinstance(v, dict):
                raise ValueError("filter_metadata must be a JSON object")
        return v

    @model_validator(mode="after")
    def _one_query(self) -> SearchIn:
        if (self.q is None) == (self.vector is None):
            raise ValueError("give exactly one of q (text) or vector")
        if self.ts_start and self.ts_end and self.ts_start > self.ts_end:
            raise ValueError("ts_start is after ts_end")
        return self
