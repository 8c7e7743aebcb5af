"""What the embedder embeds, whatever its table: events now, code chunks later.

A store reads the current rows behind a message's ids and writes their results; every
write moves only rows still ``pending``, so redelivery never counts twice."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import numpy as np
from pgvector import Vector

from mnemo_core.queries import Q


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


class SqlItemStore:
    """An :class:`ItemStore` over one table, by the names of its three statements in
    :data:`Q`; subclasses say how a row reads as text and, where the table's key is not
    the message's string id, how ids convert."""

    kind: str
    load_query: str
    store_query: str
    settle_query: str

    def keys(self, ids: list[str]) -> list[Any]:
        return ids

    def text(self, row: asyncpg.Record) -> str | None:
        raise NotImplementedError

    async def load(self, conn: asyncpg.Connection, ids: list[str]) -> list[Item]:
        rows = await conn.fetch(Q[self.load_query], self.keys(ids))
        return [
            Item(r["id"], self.text(r), r["embedding_status"], r["job_id"], r["job_status"])
            for r in rows
        ]

    async def store(
        self, conn: asyncpg.Connection, ids: list[str], vectors: list[np.ndarray], model: str
    ) -> Moved:
        # Vector objects: asyncpg would read a bare ndarray as a nested array.
        rows = await conn.fetch(
            Q[self.store_query],
            self.keys(ids),
            [Vector(v) for v in vectors],
            model,
        )
        return Moved([(r["id"], r["job_id"]) for r in rows])

    async def settle(
        self, conn: asyncpg.Connection, ids: list[str], status: str, error: str | None
    ) -> Moved:
        rows = await conn.fetch(Q[self.settle_query], self.keys(ids), status, error)
        return Moved([(r["id"], r["job_id"]) for r in rows])
