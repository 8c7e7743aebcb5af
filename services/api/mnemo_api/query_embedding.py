"""Query vectors for search, asked of the embedder service through the database.

The API puts ``{rid, text, reply_to}`` on the ``embed_query`` queue and NOTIFYs the
embedders; one of them encodes it and NOTIFYs the answer on this API instance's own
channel. No HTTP between services, no model in the API."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import numpy as np

from mnemo_core import db, vectors, workers
from mnemo_core import logging as mlog
from mnemo_core.errors import EmbedderUnavailable
from mnemo_core.queries import Q

log = mlog.get(__name__)


class QueryEmbedder:
    def __init__(self, pool: asyncpg.Pool, dsn: str, *, timeout_s: float, dead_after_s: float):
        self.pool = pool
        self.dsn = dsn
        self.timeout_s = timeout_s
        self.dead_after_s = dead_after_s
        self.channel = f"mnemo_query_answer_{uuid.uuid4().hex[:12]}"
        self._listener: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._waiting: dict[str, asyncio.Future[np.ndarray]] = {}
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
        """Payloads are ``ok:<rid>:<base64 float32>`` or ``err:<rid>:<message>``."""
        status, rid, body = [*payload.split(":", 2), "", ""][:3]
        fut = self._waiting.get(rid)
        if fut is None or fut.done():
            return
        if status == "ok":
            fut.set_result(vectors.decode(body))
        else:
            fut.set_exception(
                EmbedderUnavailable(f"the embedder could not embed the query: {body}")
            )

    async def _embedders_alive(self) -> int:
        now = time.monotonic()
        if now - self._live_checked > 2.0 or self._live == 0:
            async with self.pool.acquire() as conn:
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
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(
                    Q["ask_query_embedding"], {"rid": rid, "text": text, "reply_to": self.channel}
                )
            return await asyncio.wait_for(fut, self.timeout_s)
        except TimeoutError:
            self._live_checked = 0.0
            raise EmbedderUnavailable(
                f"no embedder answered within {self.timeout_s:g}s; try again later"
            ) from None
        finally:
            self._waiting.pop(rid, None)
