"""What the embedder embeds, whatever its table: events now, code chunks later.

A store reads the current rows behind a message's ids and writes their results; every
write moves only rows still ``pending``, so redelivery never counts twice."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import asyncpg
import numpy as np


@dataclass(frozen=True)
class Item:
    id: str
    text: str | None
    status: str
    job_id: uuid.UUID | None
    job_status: str | None


@dataclass(frozen=True)
class Moved:
    """Rows a write moved out of ``pending``: (item id, job id)."""

    rows: list[tuple[str, uuid.UUID | None]]

    def per_job(self) -> dict[uuid.UUID, list[str]]:
        out: dict[uuid.UUID, list[str]] = {}
        for item_id, job_id in self.rows:
            if job_id is not None:
                out.setdefault(job_id, []).append(item_id)
        return out

    def count(self) -> Counter[uuid.UUID]:
        return Counter(j for _, j in self.rows if j is not None)


class ItemStore(Protocol):
    kind: str

    async def load(self, conn: asyncpg.Connection, ids: list[str]) -> list[Item]: ...

    async def store(
        self, conn: asyncpg.Connection, ids: list[str], vectors: list[np.ndarray], model: str
    ) -> Moved: ...

    async def settle(
        self, conn: asyncpg.Connection, ids: list[str], status: str, error: str | None
    ) -> Moved: ...
