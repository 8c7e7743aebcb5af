"""Queue message shapes. Messages carry ids, not payloads: workers read the current rows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from mnemo_core.errors import PoisonMessage

EMBED_KINDS = ("event", "chunk")


@dataclass(frozen=True)
class EmbedMessage:
    job_id: uuid.UUID | None
    kind: str
    ids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "job_id": str(self.job_id) if self.job_id else None,
            "kind": self.kind,
            "ids": list(self.ids),
        }


def parse_embed(raw: Any) -> EmbedMessage:
    """Validate a message read from ``embed``; anything else raises PoisonMessage."""
    if not isinstance(raw, dict):
        raise PoisonMessage(f"message is {type(raw).__name__}, expected an object")
    kind = raw.get("kind")
    if kind not in EMBED_KINDS:
        raise PoisonMessage(f"unknown kind {kind!r}; expected one of {', '.join(EMBED_KINDS)}")
    ids = raw.get("ids")
    if not isinstance(ids, list) or not ids or len(ids) > 10_000:
        raise PoisonMessage("ids must be a non-empty list of at most 10000 ids")
    job_raw = raw.get("job_id")
    try:
        job_id = uuid.UUID(str(job_raw)) if job_raw is not None else None
        if kind == "event":
            ids = [str(uuid.UUID(str(i))) for i in ids]
        elif not all(isinstance(i, int | str) for i in ids):
            raise ValueError("chunk ids must be integers or strings")
    except (ValueError, TypeError) as exc:
        raise PoisonMessage(f"bad id in message: {exc}") from exc
    return EmbedMessage(job_id, kind, tuple(str(i) for i in ids))


@dataclass(frozen=True)
class IndexMessage:
    job_id: uuid.UUID | None
    file_ids: tuple[int, ...]


def parse_index(raw: Any) -> IndexMessage:
    """Validate a message read from ``index``; anything else raises PoisonMessage."""
    if not isinstance(raw, dict) or raw.get("kind") != "file":
        raise PoisonMessage("expected an object with kind 'file'")
    ids = raw.get("ids")
    if not isinstance(ids, list) or not ids or len(ids) > 10_000:
        raise PoisonMessage("ids must be a non-empty list of at most 10000 file ids")
    try:
        job = uuid.UUID(str(raw["job_id"])) if raw.get("job_id") is not None else None
        file_ids = tuple(int(i) for i in ids)
    except (ValueError, TypeError) as exc:
        raise PoisonMessage(f"bad id in message: {exc}") from exc
    return IndexMessage(job, file_ids)


def chunked(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
