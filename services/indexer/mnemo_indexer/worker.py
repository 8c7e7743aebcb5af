"""The index worker: read file ids from ``index``, parse them in worker processes (outside
any transaction), then write chunks, edges, job progress and the chunk embeddings' queue
messages, and acknowledge, in one transaction per message."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from operator import itemgetter

import asyncpg
import structlog

from mnemo_core import db, jobs, queue, resolve
from mnemo_core import logging as mlog
from mnemo_core.errors import PoisonMessage
from mnemo_core.messages import EmbedMessage, IndexMessage, chunked, parse_index
from mnemo_core.queries import Q
from mnemo_core.retry import DeadLetter, backoff_s, decide, exhausted
from mnemo_core.settings import Settings
from mnemo_core.worker_base import QueueWorker
from mnemo_indexer.pool import FileFailed, FileRows, ParsePool
from mnemo_indexer.records import SEP, ChunkColumns, EdgeColumns, packed

log = mlog.get(__name__)


@dataclass
class Outcome:
    """What one message's files came to, before they are written."""

    parsed: dict[int, FileRows] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    retry: dict[int, str] = field(default_factory=dict)  # transient: parse again later
    cancelled: list[int] = field(default_factory=list)
    gave_up: str | None = None  # a transient failure on the last attempt: dead-letter


@dataclass(frozen=True)
class Replaced:
    """The files whose new parse was written, and their chunks that need embedding."""

    claimed: list[int]
    ids: list[str]


def _job_of(msg: queue.Message) -> str | None:
    """The job a message says it belongs to, as far as it can be read before parsing."""
    job_id = msg.body.get("job_id") if isinstance(msg.body, dict) else None
    return job_id if isinstance(job_id, str) else None


# A message made ready to write: what it asks, its files' current rows, what parsing gave.
Prepared = tuple[IndexMessage, list[asyncpg.Record], Outcome]


class IndexWorker(QueueWorker):
    kind = "indexer"
    queue_name = queue.INDEX

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        parser: ParsePool,
        *,
        worker_id: str,
        once: bool = False,
    ) -> None:
        super().__init__(pool, settings, worker_id=worker_id, once=once)
        self.parser = parser

    async def _read(self, poll_s: int) -> list[queue.Message]:
        async with self.pool.acquire() as conn:
            return await queue.read(
                conn,
                queue.INDEX,
                vt=self.settings.visibility_timeout_s,
                qty=self.settings.index_messages,
                poll_s=poll_s,
            )

    async def _read_and_process(self) -> None:
        if self._cut_off:
            await self._hand_back()
        # When the visibility timeout of each message in hand ends (time.monotonic()).
        until: dict[int, float] = {}

        async def read(poll_s: int) -> list[queue.Message]:
            ends = time.monotonic() + self.settings.visibility_timeout_s
            got = await self._read(poll_s)
            until.update((m.msg_id, ends) for m in got)
            return got

        msgs = collections.deque(await read(0 if self.once else self.settings.poll_seconds))
        if not msgs:
            if self.once:
                self.stop()
            return
        try:
            await self._work_through(msgs, read)
        except db.UNAVAILABLE_ERRORS:
            # The database went away: the message in writing (unless its write committed)
            # and the ones behind it are handed back once it answers (QueueWorker._hand_back).
            for m in msgs:
                self._cut(until[m.msg_id], [m.msg_id])
            raise

    async def _work_through(
        self,
        msgs: collections.deque[queue.Message],
        read: Callable[[int], Awaitable[list[queue.Message]]],
    ) -> None:
        """Process the messages in hand, the first of ``msgs`` being the one in work (it
        leaves ``msgs`` once it is done), reading more with ``read`` as the last one starts.

        The next message's files are parsed while this one's rows are written: the parser
        processes and the database work at the same time, not in turn. When the last
        message in hand starts, the next ones are read (without waiting), so the parser
        does not sit idle at the end of each read (bench/README.md, change 17)."""
        ahead: asyncio.Future[Prepared] | None = None
        try:
            while msgs:
                msg = msgs[0]
                if self.stopping and not self.once:
                    await self._release([m.msg_id for m in msgs])
                    return
                if len(msgs) == 1 and not self.stopping:
                    msgs.extend(await read(0))
                prepared = ahead if ahead is not None else asyncio.ensure_future(self._prepare(msg))
                ahead = None
                if len(msgs) > 1:
                    ahead = asyncio.ensure_future(self._prepare(msgs[1]))
                # Every line about this message names it and its job.
                with structlog.contextvars.bound_contextvars(
                    msg_id=msg.msg_id, job_id=_job_of(msg)
                ):
                    await self._process(msg, prepared)
                msgs.popleft()
        finally:
            if ahead is not None:  # stopping, or the database went away: not written
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    async def _prepare(self, msg: queue.Message) -> Prepared:
        """Validate a message, load its files and parse them (no transaction open)."""
        if exhausted(msg.read_ct, self.settings.max_attempts):
            raise PoisonMessage(f"delivered {msg.read_ct} times without success")
        parsed = parse_index(msg.body)
        rows = await self._load(parsed)
        return parsed, rows, await self._parse(parsed, rows, msg.read_ct)

    async def _process(self, msg: queue.Message, prepared: asyncio.Future[Prepared]) -> None:
        started = time.perf_counter()
        try:
            parsed, rows, outcome = await prepared
            counts = await asyncio.shield(self._write(msg, parsed, rows, outcome))
        except PoisonMessage as exc:
            await self._dead_letter(msg, f"poison message: {exc}")
            return
        except (asyncpg.PostgresError, ValueError, TypeError, KeyError) as exc:
            if isinstance(exc, db.UNAVAILABLE_ERRORS):
                # The database went away (a shutdown, a restart, a session ended by it): the
                # batch loop backs off and the message comes back, no failure of its own.
                # (PostgresConnectionError alone missed AdminShutdownError, CannotConnectNow,
                # TooManyConnections and the idle-in-transaction timeout: each cost the
                # message an attempt, or its place in the dead letters.)
                raise
            decision = decide(exc, msg.read_ct, self.settings.max_attempts)
            log.warning(
                "message_failed",
                queue=queue.INDEX,
                msg_id=msg.msg_id,
                read_ct=msg.read_ct,
                error=str(exc),
            )
            if isinstance(decision, DeadLetter):
                await self._dead_letter(msg, decision.reason)
            else:
                await self._release([msg.msg_id], decision.delay_s)
            return
        self.batch_done(len(outcome.parsed))
        self.stats.observe(len(outcome.parsed) + len(outcome.failed), time.perf_counter() - started)
        log.info(
            "files_indexed",
            queue=queue.INDEX,
            msg_id=msg.msg_id,
            job_id=str(parsed.job_id),
            ms=round((time.perf_counter() - started) * 1000),
            **counts,
        )

    async def _load(self, m: IndexMessage) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return list(await conn.fetch(Q["files_to_index"], list(m.file_ids)))

    async def _parse(
        self, m: IndexMessage, rows: list[asyncpg.Record], msg_read_ct: int
    ) -> Outcome:
        out = Outcome()
        todo = []
        for r in rows:
            if r["status"] != "pending" or r["job_id"] != m.job_id:
                continue  # done already (redelivery), or handed to a newer job
            if r["job_status"] == "cancelled":
                out.cancelled.append(r["id"])
            else:
                todo.append(r)

        async def one(r: asyncpg.Record) -> None:
            try:
                out.parsed[r["id"]] = await self.parser.parse(
                    r["path"], r["content"], r["language"]
                )
            except FileFailed as exc:
                attempts = min(
                    exc.deliveries or self.settings.max_attempts, self.settings.max_attempts
                )
                if exc.transient and msg_read_ct < attempts:
                    out.retry[r["id"]] = exc.reason
                elif exc.transient:
                    out.failed[r["id"]] = f"{exc.reason} (after {msg_read_ct} attempts)"
                    out.gave_up = f"{r['path']}: {out.failed[r['id']]}"
                else:
                    out.failed[r["id"]] = exc.reason

        await asyncio.gather(*(one(r) for r in todo))
        return out

    async def _write(
        self,
        msg: queue.Message,
        m: IndexMessage,
        rows: list[asyncpg.Record],
        out: Outcome,
    ) -> dict[str, int]:
        by_id = {r["id"]: r for r in rows}
        repos = {by_id[i]["repository"] for i in [*out.parsed, *out.failed] if i in by_id}
        counts = {"files": 0, "failed": 0, "chunks": 0, "queued": 0, "symbols": 0, "edges": 0}
        async with self.pool.acquire() as conn, conn.transaction():
            for repo in sorted(repos):
                await conn.execute(Q["lock_repository"], repo)
            if out.cancelled:
                await conn.execute(Q["cancel_files"], out.cancelled)
            failures: list[dict[str, str]] = []
            for file_id, reason in out.failed.items():
                r = by_id[file_id]
                if await conn.fetchval(
                    Q["fail_file"], file_id, r["content_hash"], m.job_id, reason
                ):
                    counts["failed"] += 1
                    failures.append({"path": r["path"], "reason": reason})
                    if m.job_id is not None:
                        await jobs.record_failures(
                            conn,
                            m.job_id,
                            "file",
                            [str(file_id)],
                            f"{r['path']}: {reason}",
                            msg.read_ct,
                        )
            pending_chunks = await self._replace_files(conn, by_id, out.parsed, m.job_id)
            for file_id in pending_chunks.claimed:
                fr = out.parsed[file_id]
                counts["files"] += 1
                counts["chunks"] += fr.n_chunks
                counts["symbols"] += fr.n_symbols
                counts["edges"] += fr.n_edges
            counts["queued"] = len(pending_chunks.ids)
            await queue.send_many(
                conn,
                queue.EMBED,
                [
                    EmbedMessage(m.job_id, "chunk", tuple(b)).to_json()
                    for b in chunked(pending_chunks.ids, self.settings.message_batch)
                ],
            )
            if m.job_id is not None:
                await self._account(conn, m.job_id, msg, counts, failures, repos)
            if out.retry:
                # Done files stay done; the message comes back for the rest after a backoff.
                delay = backoff_s(msg.read_ct)
                await queue.release(conn, queue.INDEX, [msg.msg_id], delay)
                log.warning(
                    "files_retry",
                    queue=queue.INDEX,
                    msg_id=msg.msg_id,
                    read_ct=msg.read_ct,
                    retry_in_s=delay,
                    files=[by_id[i]["path"] for i in out.retry],
                )
            elif out.gave_up is not None:
                # The file failed on its job; the message goes where operators look.
                await queue.dead_letter(conn, queue.INDEX, msg, out.gave_up)
            else:
                await queue.delete(conn, queue.INDEX, [msg.msg_id])
        self.count(processed=counts["files"], failed=counts["failed"])
        return counts

    async def _replace_files(
        self,
        conn: asyncpg.Connection,
        by_id: dict[int, asyncpg.Record],
        parsed: dict[int, FileRows],
        job_id: uuid.UUID | None,
    ) -> Replaced:
        """Swap the message's files' chunks and edges for their new parse, a handful of
        statements for all of them (per file, eight round trips each were most of the
        indexer's time: bench/README.md). Only files still pending for this job with the
        content that was parsed are claimed; chunks whose embedded text did not change keep
        their vectors. Returns the claimed files and the chunk ids that need embedding."""
        ids = list(parsed)
        if not ids:
            return Replaced([], [])
        claimed = [
            r["id"]
            for r in await conn.fetch(
                Q["claim_files"],
                ids,
                [by_id[i]["content_hash"] for i in ids],
                job_id,
                [SEP.join(parsed[i].imports) for i in ids],
                [parsed[i].language for i in ids],
            )
        ]
        if not claimed:
            return Replaced([], [])
        model = self.settings.embedding_model
        reuse = {
            o["embed_hash"]: o["embedding"]
            for o in await conn.fetch(Q["old_chunk_vectors"], claimed)
            if o["embedding_model"] == model
        }
        # Old chunks still waiting for an embedding leave their jobs: after the rows, in job
        # order, as every writer locks them.
        for p in sorted(await conn.fetch(Q["clear_file_rows"], claimed), key=itemgetter(0)):
            await jobs.progress(conn, p["job_id"], total=-p["n"])
        chunks = ChunkColumns.concat(parsed[i].chunks for i in claimed)
        owners = [i for i in claimed for _ in range(parsed[i].n_chunks)]  # file of each chunk
        vecs = [reuse.get(h) for h in chunks.embed_hash]
        sep, texts = packed(
            [
                [by_id[i]["repository"] for i in owners],
                [by_id[i]["path"] for i in owners],
                [parsed[i].language for i in owners],
                chunks.kind,
                chunks.name,
                chunks.qualified_name,
                chunks.signature,
                chunks.docstring,
                chunks.content,
                chunks.calls,
                chunks.content_hash,
                chunks.embed_hash,
                chunks.lexemes,
                ["done" if v is not None else "pending" for v in vecs],
            ]
        )
        inserted = await conn.fetch(
            Q["insert_chunks"],
            owners,
            job_id,
            sep,
            *texts,  # $4..$17
            chunks.parent_qualified_name,
            chunks.start_line,
            chunks.end_line,
            chunks.complexity,
            vecs,
            [model if v is not None else None for v in vecs],
        )

        # Edges by repository (a message's files are usually all of one), each resolved
        # against its repository's current symbols.
        def repo_of(file_id: int) -> str:
            return str(by_id[file_id]["repository"])

        edge_owners: list[int] = []
        parts: list[EdgeColumns] = []
        targets: list[str | None] = []
        for repo, group in itertools.groupby(sorted(claimed, key=repo_of), key=repo_of):
            mine = list(group)
            cols = EdgeColumns.concat(parsed[i].edges for i in mine)
            known, bare_map = await resolve.lookups(
                conn,
                repo,
                itertools.chain.from_iterable(cols.candidates),
                (b for b in cols.bare if b is not None),
            )
            targets += [
                resolve.pick(c, b, known, bare_map)
                for c, b in zip(cols.candidates, cols.bare, strict=True)
            ]
            edge_owners += [i for i in mine for _ in range(parsed[i].n_edges)]
            parts.append(cols)
        edges = EdgeColumns.concat(parts)
        sep, texts = packed(
            [
                [by_id[i]["repository"] for i in edge_owners],
                edges.source,
                edges.relationship,
                edges.external,
                [SEP.join(c) for c in edges.candidates],
            ]
        )
        await conn.execute(
            Q["insert_edges"],
            edge_owners,
            sep,
            *texts,  # $3..$7
            edges.bare,
            edges.line,
            targets,
        )
        return Replaced(
            claimed, [str(r["id"]) for r in inserted if r["embedding_status"] == "pending"]
        )

    async def _account(
        self,
        conn: asyncpg.Connection,
        job_id: uuid.UUID,
        msg: queue.Message,
        counts: dict[str, int],
        failures: list[dict[str, str]],
        repos: set[str],
    ) -> None:
        await jobs.progress(
            conn,
            job_id,
            done=counts["files"],
            failed=counts["failed"],
            total=counts["queued"],
            error=f"{failures[-1]['path']}: {failures[-1]['reason']}" if failures else None,
            attempts=msg.read_ct,
        )
        await conn.execute(
            Q["index_result"],
            job_id,
            counts["files"],
            failures,
            counts["chunks"],
            counts["symbols"],
            counts["edges"],
        )
        if await conn.fetchval(Q["files_left_in_job"], job_id) == 0:
            # The job's last file: calls into files parsed earlier (or later) resolve now.
            for repo in sorted(repos):
                await resolve.resolve_repository(conn, repo)
                await conn.execute(Q["repository_indexed"], repo)

    async def _dead_letter(self, msg: queue.Message, reason: str) -> None:
        """To ``index_dlq`` with its error; its still-pending files fail on their job."""
        async with self.pool.acquire() as conn, conn.transaction():
            await queue.dead_letter(conn, queue.INDEX, msg, reason)
            try:
                m = parse_index(msg.body)
            except PoisonMessage:
                m = None
            if m is not None and m.job_id is not None:
                rows = await conn.fetch(Q["files_to_index"], list(m.file_ids))
                failures = []
                for r in rows:
                    if await conn.fetchval(
                        Q["fail_file"], r["id"], r["content_hash"], m.job_id, reason[:1000]
                    ):
                        failures.append({"path": r["path"], "reason": reason[:1000]})
                        await jobs.record_failures(
                            conn,
                            m.job_id,
                            "file",
                            [str(r["id"])],
                            f"{r['path']}: {reason}",
                            msg.read_ct,
                        )
                if failures:
                    await jobs.progress(
                        conn, m.job_id, failed=len(failures), error=reason, attempts=msg.read_ct
                    )
                    await conn.execute(Q["index_result"], m.job_id, 0, failures, 0, 0, 0)
                self.count(failed=len(failures))
        log.warning("dead_lettered", queue=queue.INDEX, msg_id=msg.msg_id, reason=reason)
