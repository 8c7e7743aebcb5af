"""Query vectors for search, asked of the embedder service through the database.

The API puts ``{rid, text, reply_to}`` on the ``embed_query`` queue and NOTIFYs the
embedders; one of them encodes it, writes the answer (the vector, or why there is none) to
``query_answers`` and NOTIFYs the request id on this API instance's own channel; the API
takes the row. The vector never travels in the NOTIFY payload, which holds at most 8,000
bytes (migration 0004 says why). No HTTP between services, no model in the API."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import numpy as np

from mnemo_core import db, workers
from mnemo_core import logging as mlog
from mnemo_core.errors import EmbedderUnavailable
from mnemo_core.queries import Q

log = mlog.get(__name__)


class QueryEmbedder:
    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        *,
        timeout_s: float,
        dead_after_s: float,
        acquire_timeout_s: float | None = None,
    ):
        self.pool = pool
        self.dsn = dsn
        self.timeout_s = timeout_s
        self.dead_after_s = dead_after_s
        self.acquire_timeout_s = acquire_timeout_s  # AppState.acquire
        self.channel = f"mnemo_query_answer_{uuid.uuid4().hex[:12]}"
        self._listener: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._live_checked = 0.0
        self._live = 0

    async def close(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        self._listener = None

    async def _ensure_listener(self) -> None:
        async with self._lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            conn = await db.connect(self.dsn, application_name="mnemo-api:query-listener")
            await conn.add_listener(self.channel, self._on_answer)
            conn.add_termination_listener(lambda _c: self._on_lost())
            self._listener = conn

    def _on_lost(self) -> None:
        self._listener = None
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(EmbedderUnavailable("lost the database connection"))

    def _on_answer(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        """The payload is the request id whose answer is now in ``query_answers``."""
        fut = self._waiting.get(payload)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _embedders_alive(self) -> int:
        now = time.monotonic()
        if now - self._live_checked > 2.0 or self._live == 0:
            async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
                self._live = await workers.live_count(conn, "embedder", self.dead_after_s)
            self._live_checked = now
        return self._live

    async def embed(self, text: str) -> np.ndarray:
        if not await self._embedders_alive():
            raise EmbedderUnavailable(
                "no live embedder: text search needs a running mnemo-embedder "
                "(or search with a vector)"
            )
        await self._ensure_listener()
        rid = uuid.uuid4().hex
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            # A TimeoutError of the database's (no connection, no answer to the ask) is
            # the database's 503, not the embedder's.
            async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
                await conn.execute(
                    Q["ask_query_embedding"], {"rid": rid, "text": text, "reply_to": self.channel}
                )
            try:
                await asyncio.wait_for(fut, self.timeout_s)
            except TimeoutError:
                self._live_checked = 0.0
                raise EmbedderUnavailable(
                    f"no embedder answered within {self.timeout_s:g}s; try again later"
                ) from None
        finally:
            self._waiting.pop(rid, None)
        async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
            answer = await conn.fetchrow(Q["take_query_answer"], rid)
        if answer is None:
            raise EmbedderUnavailable("the embedder's answer was lost; try again")
        if answer["error"] is not None:
            raise EmbedderUnavailable(f"the embedder could not embed the query: {answer['error']}")
        return np.asarray(answer["embedding"].to_numpy(), dtype=np.float32)
