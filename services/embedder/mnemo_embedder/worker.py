"""The embed worker: read a batch, encode outside any transaction, then write vectors,
job progress and the acknowledgement in one transaction."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import numpy as np
import structlog
from pgvector import Vector

from mnemo_core import db, jobs, queue
from mnemo_core import logging as mlog
from mnemo_core.code import ChunkStore
from mnemo_core.errors import PoisonMessage
from mnemo_core.events import EventStore
from mnemo_core.items import Item, ItemStore, Moved
from mnemo_core.messages import EmbedMessage, parse_embed
from mnemo_core.queries import Q
from mnemo_core.retry import DeadLetter, Retry, decide, exhausted
from mnemo_core.settings import Settings
from mnemo_core.worker_base import QueueWorker, wait
from mnemo_embedder.model import Model

log = mlog.get(__name__)

QUERY_CHANNEL = "mnemo_embed_query"
# Items encoded and written together; a worker reads about one group's worth of messages at
# a time, so embedders share a backlog evenly (bench/README.md).
MAX_GROUP_ITEMS = 256
# A model call stops where texts get this much shorter than its first (longest) one...
SLICE_LENGTH_RATIO = 1.5
# ... counting lengths up to about the model's window (MiniLM reads 256 tokens, some 1,200
# characters): past it, texts are truncated to the same cost.
FULL_WINDOW_CHARS = 1200


@dataclass
class Work:
    """One message in hand and what it turned out to need."""

    msg: queue.Message
    parsed: EmbedMessage | None = None
    texts: dict[str, str] = field(default_factory=dict)  # item id -> text to embed
    skip: list[str] = field(default_factory=list)  # pending items without text
    cancel: list[str] = field(default_factory=list)  # pending items of cancelled jobs
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # item id -> why the model refused it
    dead: str | None = None  # dead-letter reason
    retry_s: int | None = None


class EmbedWorker(QueueWorker):
    kind = "embedder"
    queue_name = queue.EMBED

    def __init__(
        self,
        pool: asyncpg.Pool,
        model: Model,
        settings: Settings,
        *,
        worker_id: str,
        once: bool = False,
        stores: dict[str, ItemStore] | None = None,
    ) -> None:
        super().__init__(pool, settings, worker_id=worker_id, once=once)
        self.model = model
        self.stores: dict[str, ItemStore] = stores or {"event": EventStore(), "chunk": ChunkStore()}
        # One thread encodes batches, in slices; query texts for search have a thread of
        # their own, so a query never waits behind a slice (a slice of 64 long texts takes
        # about a second on two cores). Inference only reads the model's weights (no_grad),
        # which two threads may do at once; the tokenizer's settings are fixed at load.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")
        self._query_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="query")
        self._query_wake = asyncio.Event()
        # The previous group's write, in flight while the model encodes the next group.
        self._writing: asyncio.Future[None] | None = None
        # Ids per message in the last read (the API's message_batch to start with).
        self._ids_per_message: float = settings.message_batch

    def side_loops(self) -> dict[str, Coroutine[Any, Any, None]]:
        return {} if self.once else {"query-embeddings": self._query_loop()}

    async def _shutdown(self) -> None:
        await self._flush()  # a write the database missed is logged by _finish
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._query_executor.shutdown(wait=False, cancel_futures=True)
        await super()._shutdown()

    async def _query_loop(self) -> None:
        """Answer query embeddings for search: woken by NOTIFY, polling once a second too.
        Nothing a query does stops this loop: a query that fails gets an error answer; an
        unexpected error is logged, and the loop goes on a second later."""
        listener: asyncpg.Connection | None = None
        while not self._stop.is_set():
            try:
                if listener is None or listener.is_closed():
                    listener = await db.connect(
                        self.settings.dsn(), application_name=f"mnemo-embedder:{self.worker_id}"
                    )
                    await listener.add_listener(QUERY_CHANNEL, lambda *_: self._query_wake.set())
                answered = await self._answer_queries()
                self.outage.recovered(worker_id=self.worker_id)
                if not answered:
                    await wait(self._query_wake, 1.0)
                    self._query_wake.clear()
            except db.UNAVAILABLE_ERRORS as exc:
                self.outage.failed(
                    loop="query-embeddings", worker_id=self.worker_id, error=str(exc)
                )
                listener = None
                await wait(self._stop, 1.0)
            except Exception as exc:
                log.exception("query_loop_error", error=str(exc))
                await wait(self._stop, 1.0)
        if listener is not None and not listener.is_closed():
            await listener.close()

    async def _answer_queries(self) -> int:
        """Read waiting queries, encode them, answer each (a vector or its error) and delete
        them, in one transaction. Stale or malformed ones are deleted unanswered."""
        async with self.pool.acquire() as conn:
            msgs = await queue.read(conn, queue.EMBED_QUERY, vt=30, qty=32)
        if not msgs:
            return 0
        asks = _fresh_queries(msgs, self.settings.query_timeout_s)
        answers = await self._embed_queries([a.text for a in asks])
        try:
            await self._write_answers(msgs, asks, answers)
        except db.UNAVAILABLE_ERRORS:
            raise
        except Exception as exc:
            # Still answer: every asker hears why instead of waiting out its timeout.
            log.exception("query_answers_failed", error=str(exc), queries=len(asks))
            why = f"could not store the answer: {type(exc).__name__}: {exc}"[:500]
            await self._write_answers(msgs, asks, [why] * len(asks))
        return len(msgs)

    async def _embed_queries(self, texts: list[str]) -> list[np.ndarray | str]:
        """A vector per text, or why there is none. Query texts are encoded in their own
        thread, beside the batch the model thread may be busy with (see __init__)."""
        if not texts:
            return []
        out: list[np.ndarray | str]
        try:
            out = list(await self._encode(texts, self._query_executor))
        except Exception:
            out = []  # one text may break the model: find it, answer the others
            for text in texts:
                try:
                    out.append((await self._encode([text], self._query_executor))[0])
                except Exception as exc:
                    log.warning("query_failed", error=str(exc))
                    out.append(f"{type(exc).__name__}: {exc}"[:500])
        bad = "the model made a vector that is not finite"
        return [v if isinstance(v, str) or np.isfinite(v).all() else bad for v in out]

    async def _write_answers(
        self, msgs: list[queue.Message], asks: list[QueryAsk], answers: list[np.ndarray | str]
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            if asks:
                await conn.execute(
                    Q["answer_queries"],
                    [a.rid for a in asks],
                    # Vector objects: asyncpg would read a bare ndarray as a nested array.
                    [None if isinstance(v, str) else Vector(v) for v in answers],
                    [v if isinstance(v, str) else None for v in answers],
                    [a.reply_to for a in asks],
                    2 * self.settings.query_timeout_s,
                )
            await queue.delete(conn, queue.EMBED_QUERY, [m.msg_id for m in msgs])

    # -- batches -------------------------------------------------------------------------

    async def _read_and_process(self) -> None:
        if self._cut_off:
            await self._hand_back()
        until = time.monotonic() + self.settings.visibility_timeout_s
        msgs = await self._read_batch()
        if not msgs:
            await self._flush()
            if self.once:
                self.stop()
            return
        groups = _groups(msgs, MAX_GROUP_ITEMS)
        for i, group in enumerate(groups):
            if self._stop.is_set() and not self.once:
                # Stopping: hand back what we have not started, so others take it now.
                await self._release([m.msg_id for g in groups[i:] for m in g])
                return
            try:
                await self._process(group, until)
            except db.UNAVAILABLE_ERRORS:
                self._cut(until, [m.msg_id for g in groups[i:] for m in g])
                raise

    async def _read_batch(self) -> list[queue.Message]:
        poll = 0 if self.once else self.settings.poll_seconds
        async with self.pool.acquire() as conn:
            msgs = await queue.read(
                conn,
                queue.EMBED,
                vt=self.settings.visibility_timeout_s,
                qty=_read_qty(self._ids_per_message, self.settings.message_batch),
                poll_s=poll,
            )
        if msgs:
            self._ids_per_message = sum(_item_count(m) for m in msgs) / len(msgs)
        return msgs

    async def _process(self, msgs: list[queue.Message], until: float) -> None:
        """Triage and encode a group, then hand its write to a task: the model thread goes on
        to the next group while this one's vectors, progress and acks are written. ``until``:
        when the messages' visibility timeout ends (time.monotonic())."""
        started = time.perf_counter()
        work = [Work(m) for m in msgs]
        with structlog.contextvars.bound_contextvars(msg_ids=[m.msg_id for m in msgs]):
            await self._triage(work)
            job_ids = sorted({str(w.parsed.job_id) for w in work if w.parsed and w.parsed.job_id})
            with structlog.contextvars.bound_contextvars(job_ids=job_ids):
                texts = sum(len(w.texts) for w in work if w.dead is None)
                encode_started = time.perf_counter()
                await self._embed(work)
                self.stats.observe(texts, time.perf_counter() - encode_started)
                await self._flush()  # one write in flight at most, in order
                self._writing = asyncio.ensure_future(self._finish(work, started, until))

    async def _finish(self, work: list[Work], started: float, until: float) -> None:
        try:
            n = await self._write(work)
        except db.UNAVAILABLE_ERRORS as exc:
            # The database went away under the write: its messages are not acknowledged,
            # and are handed back once it answers. Raised, the error came out of the next
            # flush, after the database was back maybe (the batch loop meets the outage on
            # its own): one more backoff for nothing, and the group read meanwhile held
            # unwritten for a whole visibility timeout.
            log.warning("batch_not_written", error=str(exc), messages=len(work))
            self._cut(until, [w.msg.msg_id for w in work])
            return
        self.batch_done(n)
        log.info(
            "batch_embedded",
            queue=queue.EMBED,
            messages=len(work),
            n=n,
            ms=round((time.perf_counter() - started) * 1000),
        )

    async def _flush(self) -> None:
        """Wait for the write in flight; shielded, so a cancelled worker still finishes it."""
        writing = self._writing
        if writing is None:
            return
        try:
            await asyncio.shield(writing)
        finally:
            if writing.done():
                self._writing = None

    async def _triage(self, work: list[Work]) -> None:
        """Parse messages and load the current rows behind them."""
        for w in work:
            if exhausted(w.msg.read_ct, self.settings.max_attempts):
                w.dead = f"delivered {w.msg.read_ct} times without success"
            try:
                w.parsed = parse_embed(w.msg.body)
            except PoisonMessage as exc:
                w.dead = f"poison message: {exc}"
        by_kind: dict[str, list[Work]] = {}
        for w in work:
            if w.parsed is not None:
                by_kind.setdefault(w.parsed.kind, []).append(w)
        async with self.pool.acquire() as conn:
            for kind, ws in by_kind.items():
                store = self.stores.get(kind)
                if store is None:
                    for w in ws:
                        w.dead = f"poison message: no store for kind {kind!r} in this embedder"
                    continue
                ids = [i for w in ws for i in w.parsed.ids]  # type: ignore[union-attr]
                items = {it.id: it for it in await store.load(conn, ids)}
                for w in ws:
                    _plan(w, items)
                    if w.dead is None and await _unknown(conn, w, items):
                        w.dead = "poison message: none of its ids exist and it belongs to no job"

    async def _embed(self, work: list[Work]) -> None:
        todo = [w for w in work if w.dead is None and w.texts]
        texts = [t for w in todo for t in w.texts.values()]
        if not texts:
            return
        try:
            vecs = await self._encode(texts)
        except Exception as exc:
            # Find the items whose text breaks the model; the others go through.
            log.warning("batch_encode_failed", error=str(exc), messages=len(todo))
            for w in todo:
                await self._embed_isolating(w)
            return
        pos = 0
        for w in todo:
            n = len(w.texts)
            w.vectors = dict(zip(w.texts, vecs[pos : pos + n], strict=True))
            pos += n

    async def _embed_isolating(self, w: Work) -> None:
        """Encode one message's texts after its group failed: the whole message first, then
        item by item, so one bad item fails alone and its neighbours are written now."""
        if len(w.texts) > 1:
            try:
                vecs = await self._encode(list(w.texts.values()))
            except Exception:  # noqa: S110 - isolated below, item by item
                pass
            else:
                w.vectors = dict(zip(w.texts, vecs, strict=True))
                return
        first: BaseException | None = None
        for item_id, text in w.texts.items():
            try:
                w.vectors[item_id] = (await self._encode([text]))[0]
            except Exception as exc:
                w.failed[item_id] = f"{type(exc).__name__}: {exc}"[:1000]
                first = first or exc
        if first is not None:
            self._fail(w, first)

    def _fail(self, w: Work, exc: BaseException) -> None:
        decision = decide(exc, w.msg.read_ct, self.settings.max_attempts)
        if isinstance(decision, DeadLetter):
            w.dead = decision.reason
        elif isinstance(decision, Retry):
            w.retry_s = decision.delay_s
        log.warning(
            "message_failed",
            msg_id=w.msg.msg_id,
            job_id=_job_of(w),
            read_ct=w.msg.read_ct,
            items_failed=len(w.failed),
            error=str(exc),
        )

    async def _encode(
        self, texts: list[str], executor: ThreadPoolExecutor | None = None
    ) -> np.ndarray:
        """Encode longest-first slices in the model thread (or ``executor``); returns rows
        in input order."""
        loop = asyncio.get_running_loop()
        out = np.zeros((len(texts), self.model.dim), dtype=np.float32)
        for idx in _slices([len(t) for t in texts], self.settings.batch_size):
            part = await loop.run_in_executor(
                executor or self._executor, self.model.encode, [texts[i] for i in idx]
            )
            out[idx] = part
        return out

    async def _write(self, work: list[Work]) -> int:
        """Results, job progress and acknowledgements in one transaction. A message whose
        items the model refused writes the rest, then goes back (to retry those items) or,
        out of attempts, to the dead-letter queue with only those items failed. A deadlock
        with another writer (the API deleting these rows, say) runs it again."""
        tally: collections.Counter[str] = collections.Counter()

        async def write(conn: asyncpg.Connection) -> None:
            tally.clear()  # counted again if the transaction is
            for w in work:
                if w.dead is not None and not w.failed:  # the message as a whole
                    ids = list(w.parsed.ids) if w.parsed is not None else []
                    await self._dead_letter(conn, w, dict.fromkeys(ids, w.dead), tally)
                    continue
                await self._store(conn, w, tally)
                if w.retry_s is not None:
                    await queue.release(conn, queue.EMBED, [w.msg.msg_id], w.retry_s)
                elif w.dead is not None:
                    reasons = {i: f"{w.dead}; this item: {e}" for i, e in w.failed.items()}
                    await self._dead_letter(conn, w, reasons, tally)
                else:
                    await queue.delete(conn, queue.EMBED, [w.msg.msg_id])

        await db.in_transaction(self.pool, write)
        self.count(processed=tally["processed"], failed=tally["failed"])
        return tally["processed"]

    async def _store(
        self, conn: asyncpg.Connection, w: Work, tally: collections.Counter[str]
    ) -> None:
        """Write a message's vectors and settle its skipped and cancelled items."""
        store = self.stores[w.parsed.kind]  # type: ignore[union-attr]
        attempts = w.msg.read_ct
        if w.vectors:
            ids = list(w.vectors)
            moved = await store.store(conn, ids, [w.vectors[i] for i in ids], self.model.name)
            tally["processed"] += len(moved.rows)
            await _count(conn, moved, done=True, attempts=attempts)
        if w.skip:
            await _count(
                conn,
                await store.settle(conn, w.skip, "skipped", None),
                done=True,
                attempts=attempts,
            )
        if w.cancel:
            await store.settle(conn, w.cancel, "cancelled", "job cancelled")

    async def _dead_letter(
        self,
        conn: asyncpg.Connection,
        w: Work,
        reasons: dict[str, str],
        tally: collections.Counter[str],
    ) -> None:
        """To ``embed_dlq`` with its error; the items in ``reasons`` (still pending) fail on
        their jobs with theirs."""
        reason = w.dead or "unknown"
        if w.failed:
            reason = f"{reason} ({len(w.failed)} of {len(w.parsed.ids)} items)"  # type: ignore[union-attr]
        await queue.dead_letter(conn, queue.EMBED, w.msg, reason)
        log.warning(
            "dead_lettered",
            msg_id=w.msg.msg_id,
            job_id=_job_of(w),
            read_ct=w.msg.read_ct,
            reason=reason,
        )
        store = self.stores.get(w.parsed.kind) if w.parsed is not None else None
        if store is None:
            return
        by_reason: dict[str, list[str]] = {}
        for item_id, why in reasons.items():
            by_reason.setdefault(why[:1000], []).append(item_id)
        for why, ids in by_reason.items():
            moved = await store.settle(conn, ids, "failed", why)
            tally["failed"] += len(moved.rows)
            for job_id, job_ids in moved.per_job().items():
                await jobs.record_failures(conn, job_id, store.kind, job_ids, why, w.msg.read_ct)
                await jobs.progress(
                    conn, job_id, failed=len(job_ids), error=why, attempts=w.msg.read_ct
                )


@dataclass(frozen=True)
class QueryAsk:
    rid: str
    reply_to: str
    text: str


def _fresh_queries(msgs: list[queue.Message], timeout_s: float) -> list[QueryAsk]:
    """The queries still worth answering: well-formed, and younger than the API's timeout."""
    now = time.time()
    out = []
    for m in msgs:
        body = m.body if isinstance(m.body, dict) else {}
        rid, reply, text = body.get("rid"), body.get("reply_to"), body.get("text")
        if not (isinstance(rid, str) and isinstance(reply, str) and isinstance(text, str)):
            continue
        if now - m.enqueued_at.timestamp() < timeout_s:
            out.append(QueryAsk(rid, reply, text))
    return out


def _job_of(w: Work) -> str | None:
    return str(w.parsed.job_id) if w.parsed is not None and w.parsed.job_id else None


async def _unknown(conn: asyncpg.Connection, w: Work, items: dict[str, Item]) -> bool:
    """Ids that never existed, outside any job: a message from elsewhere. (Ids of items
    deleted after they were queued are simply stale: their job still exists.)"""
    assert w.parsed is not None
    if any(i in items for i in w.parsed.ids):
        return False
    if w.parsed.job_id is None:
        return True
    return not await conn.fetchval(Q["job_exists"], w.parsed.job_id)


def _plan(w: Work, items: dict[str, Item]) -> None:
    """Decide per item: embed, skip (no text), cancel (job cancelled), or nothing (already
    settled or deleted: a redelivery or a stale message)."""
    assert w.parsed is not None
    for item_id in w.parsed.ids:
        it = items.get(item_id)
        if it is None or it.status != "pending":
            continue
        if it.job_status == "cancelled":
            w.cancel.append(item_id)
        elif it.text is None:
            w.skip.append(item_id)
        else:
            w.texts[item_id] = it.text


async def _count(conn: asyncpg.Connection, moved: Moved, *, done: bool, attempts: int) -> None:
    for job_id, n in moved.count().items():
        await jobs.progress(conn, job_id, done=n if done else 0, attempts=attempts)


def _slices(lengths: list[int], size: int) -> list[list[int]]:
    """Text indexes, longest first, cut into model calls of at most ``size`` texts of similar
    length: every text of a call is padded to its longest, so a call mixing code chunks with
    short notes costs as if every note were a code chunk (bench/README.md)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    out: list[list[int]] = []
    head = 0
    for i in order:
        n = min(lengths[i], FULL_WINDOW_CHARS)
        if out and len(out[-1]) < size and n * SLICE_LENGTH_RATIO >= head:
            out[-1].append(i)
        else:
            out.append([i])
            head = n
    return out


def _item_count(m: queue.Message) -> int:
    ids = m.body.get("ids") if isinstance(m.body, dict) else None
    return len(ids) if isinstance(ids, list) else 1


def _read_qty(ids_per_message: float, message_batch: int) -> int:
    """Messages to read: about one group's worth of items, at most ``message_batch``. What a
    worker does not take stays visible to the other embedders; a read of 64 full messages
    held 4,096 items, longer than their visibility timeout, while other embedders sat idle."""
    return max(1, min(message_batch, int(MAX_GROUP_ITEMS / max(ids_per_message, 1.0))))


def _groups(msgs: list[queue.Message], max_items: int) -> list[list[queue.Message]]:
    """Split a read into groups of about ``max_items`` items, so each write stays small."""
    groups: list[list[queue.Message]] = [[]]
    n = 0
    for m in msgs:
        k = _item_count(m)
        if groups[-1] and n + k > max_items:
            groups.append([])
            n = 0
        groups[-1].append(m)
        n += k
    return [g for g in groups if g]
