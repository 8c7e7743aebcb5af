"""Request and response bodies. Validation lives here; routes stay short."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    field_validator,
    model_validator,
)

from mnemo_api.protocol import MAX_HEAD_BYTES

MAX_JSON_DEPTH = 32
MAX_FILTER_DEPTH = 8


def check_json(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Refuse what PostgreSQL's jsonb cannot store whole (NUL characters, lone surrogates)
    and nesting deeper than ``max_depth``, naming the path at fault."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        v, where, depth = stack.pop()
        if depth > max_depth:
            raise ValueError(f"nested deeper than {max_depth} levels at {where or 'the top'}")
        if isinstance(v, dict):
            for k, child in v.items():
                _check_text(k, f"{where}.{k}" if where else str(k))
                stack.append((child, f"{where}.{k}" if where else str(k), depth + 1))
        elif isinstance(v, list):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(v))
        elif isinstance(v, str):
            _check_text(v, where)
        elif isinstance(v, float) and not math.isfinite(v):
            # 1e999 parses as infinity; JSON (and jsonb) has no such number.
            raise ValueError(f"not a finite number at {where or 'the top'}")
    return value


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise ValueError(f"NUL character in {where or 'a string'}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"invalid Unicode (lone surrogate) in {where or 'a string'}") from exc


def _safe(text: str) -> str:
    _check_text(text, "")
    return text


# A string PostgreSQL can store: no NUL, no lone surrogates.
SafeStr = Annotated[str, AfterValidator(_safe)]


def _a_number(v: Any) -> Any:
    # pydantic takes JSON true/false as 1/0 and "5" as 5 for an int field: a client bug
    # either way, never a count.
    if isinstance(v, bool):
        raise ValueError("expected a whole number, not true or false")
    if isinstance(v, str):
        raise ValueError(f"expected a whole number, not a string ({v[:20]!r})")
    return v


# A whole number sent as a JSON number: not true or false, not "5". (The GET routes whose
# models have one read their query parameters as integers first.)
Count = Annotated[int, BeforeValidator(_a_number)]


# pgvector keeps 32-bit floats and sums a cosine's squares in them.
_F32 = np.finfo(np.float32)


def _usable(v: list[float]) -> list[float]:
    if not all(math.isfinite(x) for x in v):
        raise ValueError("values must be finite numbers")
    if not v:
        return v  # the dimension check names this
    with np.errstate(over="ignore", under="ignore"):
        a = np.asarray(v, dtype=np.float32)
        squares = float(np.dot(a, a))
    if not math.isfinite(squares):
        raise ValueError(
            f"too large for 32-bit floats (values up to ±{_F32.max:.3g}, and a squared "
            "length that fits): scale it down"
        )
    if squares < _F32.tiny:
        raise ValueError("has no length (all zeros, or nearly): cosine similarity is undefined")
    return v


# A vector pgvector can store and compare by cosine: numbers only (JSON true and "0.5" are
# not; pydantic would take them as 1.0 and 0.5), no NaN, no infinity (1e999 parses as one),
# nothing that overflows 32-bit floats, not all zeros.
FiniteVector = Annotated[list[StrictFloat], AfterValidator(_usable)]


def _aware(ts: dt.datetime | None) -> dt.datetime | None:
    """Naive timestamps are taken as UTC; a time whose UTC date is outside years 1-9999
    (0001-01-01T00:00:00+14:00, say) is refused here rather than by the database driver."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    try:
        utc = ts.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError as exc:
        raise ValueError("out of range once in UTC (years 1 to 9999)") from exc
    if utc in (dt.datetime.min, dt.datetime.max):
        # The database driver writes these two as -infinity and infinity.
        raise ValueError("0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z are not times")
    return ts


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: dict[str, Any] = Field(
        description="The event; its text is the first non-empty of "
        "content.text|body|message|content|title"
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    timestamp: dt.datetime | None = None
    embedding: FiniteVector | None = Field(
        default=None, description="A vector of the configured dimension skips the queue"
    )

    @field_validator("timestamp")
    @classmethod
    def _tz(cls, v: dt.datetime | None) -> dt.datetime | None:
        return _aware(v)

    @field_validator("content", "metadata")
    @classmethod
    def _storable(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_json(v)


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
    # Something to do, as _something says, in the schema too.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"anyOf": [{"required": ["metadata"]}, {"required": ["remove"]}]},
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Top-level keys to take out (a key set to null is kept, as null).
    remove: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list, max_length=1000
    )

    @field_validator("remove")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for key in v:
            _check_text(key, "remove")
        return v

    @model_validator(mode="after")
    def _something(self) -> MetadataPatch:
        if not self.model_fields_set:
            raise ValueError("give metadata to merge, keys to remove, or both")
        return self

    @field_validator("metadata")
    @classmethod
    def _storable(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_json(v)


class EventFilters(BaseModel):
    """What selects events besides similarity: for search and for the listing."""

    model_config = ConfigDict(extra="forbid")

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
        if v is not None:
            if not isinstance(v, dict):
                raise ValueError("filter_metadata must be a JSON object")
            check_json(v, max_depth=MAX_FILTER_DEPTH)
        return v

    @model_validator(mode="after")
    def _time_order(self) -> EventFilters:
        if self.ts_start and self.ts_end and self.ts_start > self.ts_end:
            raise ValueError("ts_start is after ts_end")
        return self


class SearchIn(EventFilters):
    # Exactly one of q and vector, as _one_query says, in the schema too.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["q"], "properties": {"q": {"type": "string"}}},
                {"required": ["vector"], "properties": {"vector": {"type": "array"}}},
            ]
        },
    )

    q: str | None = Field(default=None, min_length=1, max_length=8192)

    @field_validator("q")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is not None:
            _check_text(v, "q")
            if not v.strip():
                # An event of blank text is not embedded either: nothing to compare with.
                raise ValueError("q is blank; give some text to search for")
        return v

    vector: FiniteVector | None = None
    limit: Count = Field(default=10, ge=1, le=200)

    @model_validator(mode="after")
    def _one_query(self) -> SearchIn:
        if (self.q is None) == (self.vector is None):
            raise ValueError("give exactly one of q (text) or vector")
        return self


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """Every error answer: what is wrong, and for 422 which fields."""

    detail: str
    errors: list[FieldError] | None = None
    did_you_mean: list[str] | None = Field(
        None, description="404 of an unknown symbol or repository: the names it may have meant"
    )


# Documented on every route (app-level `responses`), so clients and fuzzers know them.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The request or its body could not be read"},
    401: {"model": Problem, "description": "Missing or invalid X-API-Key (when keys are set)"},
    403: {"model": Problem, "description": "A write sent by a browser from another site"},
    404: {"model": Problem, "description": "Unknown id or name"},
    409: {"model": Problem, "description": "The state change does not apply now"},
    413: {"model": Problem, "description": "Over a size limit (named in detail)"},
    415: {"model": Problem, "description": "A body sent with a Content-Type that is not JSON"},
    431: {
        "model": Problem,
        "description": f"Request line and headers over {MAX_HEAD_BYTES // 1024} KiB",
    },
    422: {"model": Problem, "description": "Invalid input; detail names the field"},
    503: {"model": Problem, "description": "Database or embedder unavailable; see Retry-After"},
}
