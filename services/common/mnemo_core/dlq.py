"""Dead letters: inspect them without consuming, and replay them.

A dead letter (see :func:`mnemo_core.queue.dead_letter`) is
``{"queue", "msg_id", "read_ct", "enqueued_at", "error", "message": <original body>}``.
Replaying one, in one transaction: its items go from ``failed`` back to ``pending``, their
``job_failures`` rows go, the job's ``failed`` counter drops by the number of items that
moved and the job re-opens; the original body goes back on its queue; the dead letter is
deleted. Counting stays exactly-once: an item is on a job's ``failed`` counter iff its status
is ``failed``, and only items that move out of ``failed`` come off it.

What a message means is per queue and per item kind: a :class:`QueueHooks` says how to read
a message of that queue (``parse``) and, per item kind, how to put failed items back to work
(a :class:`Reopener`). :func:`default_hooks` lists them; a new item kind adds a line there.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from mnemo_core import logging as mlog
from mnemo_core import queue
from mnemo_core.errors import NotFound, PoisonMessage
from mnemo_core.messages import parse_embed, parse_index
from mnemo_core.queries import Q

log = mlog.get(__name__)

# Dead-letter queue -> the queue its messages came from. PGMQ keeps each queue in a table of
# its own, so each one here has its own named statements in ops.sql (dlq_list_<name>, ...).
DLQS: dict[str, str] = {queue.EMBED_DLQ: queue.EMBED, queue.INDEX_DLQ: queue.INDEX}
REPLAY_CHUNK = 100  # dead letters per transaction when replaying everything


@dataclass(frozen=True)
class Target:
    """The work a message stands for: items of one kind, maybe under a job."""

    job_id: uuid.UUID | None
    kind: str
    ids: tuple[str, ...]


class Reopener(Protocol):
    kind: str  # the item kind, as job_failures records it

    async def reopen(
        self, conn: asyncpg.Connection, job_id: uuid.UUID | None, ids: list[str]
    ) -> list[str]:
        """Move these items from failed back to pending; return the ids that moved."""
        ...


@dataclass(frozen=True)
class QueueHooks:
    parse: Callable[[Any], Target]  # raises PoisonMessage for a body it cannot read
    reopeners: dict[str, Reopener] = field(default_factory=dict)


class EventReopener:
    kind = "event"

    async def reopen(
        self, conn: asyncpg.Connection, job_id: uuid.UUID | None, ids: list[str]
    ) -> list[str]:
        return [r["id"] for r in await conn.fetch(Q["reopen_failed_events"], ids, job_id)]


class ChunkReopener:
    kind = "chunk"

    async def reopen(
        self, conn: asyncpg.Connection, job_id: uuid.UUID | None, ids: list[str]
    ) -> list[str]:
        rows = await conn.fetch(Q["reopen_failed_chunks"], [int(i) for i in ids], job_id)
        return [r["id"] for r in rows]


class FileReopener:
    kind = "file"

    async def reopen(
        self, conn: asyncpg.Connection, job_id: uuid.UUID | None, ids: list[str]
    ) -> list[str]:
        rows = await conn.fetch(Q["reopen_failed_files"], [int(i) for i in ids], job_id)
        if job_id is not None and rows:
            await conn.execute(Q["forget_failed_files"], job_id, [r["path"] for r in rows])
        return [r["id"] for r in rows]


def _parse_index(body: Any) -> Target:
    m = parse_index(body)
    return Target(m.job_id, "file", tuple(str(i) for i in m.file_ids))


def _parse_embed(body: Any) -> Target:
    m = parse_embed(body)
    return Target(m.job_id, m.kind, m.ids)


def default_hooks() -> dict[str, QueueHooks]:
    """Per source queue, per item kind."""
    return {
        queue.EMBED: QueueHooks(_parse_embed, {"event": EventReopener(), "chunk": ChunkReopener()}),
        queue.INDEX: QueueHooks(_parse_index, {"file": FileReopener()}),
    }


def resolve(name: str) -> str:
    """``embed_dlq`` or just ``embed``: the dead-letter queue's name, or NotFound."""
    dlq = name if name in DLQS else queue.dlq_of(name)
    if dlq not in DLQS:
        raise NotFound("dead-letter queue", name)
    return dlq


async def _check_exists(conn: asyncpg.Connection, dlq: str) -> None:
    if not await conn.fetchval(Q["queue_exists"], dlq):
        raise NotFound("dead-letter queue", f"{dlq} (not created yet)")


def _body(raw: Any) -> Any:
    """A jsonb body; another PGMQ client may have stored a JSON string holding an object."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _entry(r: asyncpg.Record) -> dict[str, Any]:
    body = _body(r["message"])
    letter = body if isinstance(body, dict) else {}
    original = letter.get("message")
    orig = original if isinstance(original, dict) else {}
    ids = orig.get("ids")
    return {
        "id": r["msg_id"],
        "dead_lettered_at": r["enqueued_at"].isoformat(),
        "queue": letter.get("queue"),
        "original_msg_id": letter.get("msg_id"),
        "attempts": letter.get("read_ct"),
        "error": letter.get("error"),
        "job_id": orig.get("job_id"),
        "kind": orig.get("kind"),
        "items": len(ids) if isinstance(ids, list) else None,
        "message": original,
    }


async def list_letters(
    conn: asyncpg.Connection, name: str, *, after: int = 0, limit: int = 50
) -> dict[str, Any]:
    """Dead letters oldest first, read straight from the queue table: nothing is consumed and
    no read counter moves."""
    dlq = resolve(name)
    await _check_exists(conn, dlq)
    rows = await conn.fetch(Q[f"dlq_list_{dlq}"], after, limit)
    letters = [_entry(r) for r in rows]
    return {
        "queue": dlq,
        "source": DLQS[dlq],
        "messages": letters,
        "next_after": letters[-1]["id"] if len(letters) == limit else None,
    }


@dataclass
class ReplayResult:
    queue: str
    replayed: list[int] = field(default_factory=list)
    requeued_items: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    not_found: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "replayed": len(self.replayed),
            "replayed_ids": self.replayed,
            "requeued_items": self.requeued_items,
            "skipped": self.skipped,
            "not_found": self.not_found,
        }


async def replay(
    pool: asyncpg.Pool,
    name: str,
    ids: list[int] | None = None,
    *,
    hooks: dict[str, QueueHooks] | None = None,
    acquire_timeout_s: float | None = None,
) -> ReplayResult:
    """Replay the given dead letters, or all of them (in transactions of REPLAY_CHUNK);
    each connection waited for at most ``acquire_timeout_s``."""
    dlq = resolve(name)
    hooks = default_hooks() if hooks is None else hooks
    result = ReplayResult(dlq)
    async with pool.acquire(timeout=acquire_timeout_s) as conn:
        await _check_exists(conn, dlq)
    after = 0
    wanted = sorted(set(ids)) if ids is not None else None
    while True:
        async with pool.acquire(timeout=acquire_timeout_s) as conn, conn.transaction():
            rows = await conn.fetch(Q[f"dlq_take_{dlq}"], wanted, after, REPLAY_CHUNK)
            for r in rows:
                await _replay_one(conn, dlq, r, hooks.get(DLQS[dlq]), result)
        if len(rows) < REPLAY_CHUNK:
            break
        after = rows[-1]["msg_id"]
    if wanted is not None:
        seen = set(result.replayed) | {s["id"] for s in result.skipped}
        result.not_found = [i for i in wanted if i not in seen]
    return result


async def _replay_one(
    conn: asyncpg.Connection,
    dlq: str,
    row: asyncpg.Record,
    hooks: QueueHooks | None,
    result: ReplayResult,
) -> None:
    source = DLQS[dlq]
    msg_id = row["msg_id"]
    letter = _body(row["message"])
    if not isinstance(letter, dict) or "message" not in letter:
        result.skipped.append({"id": msg_id, "reason": "not a MnemoLite dead letter"})
        return
    if letter.get("queue", source) != source:
        result.skipped.append(
            {"id": msg_id, "reason": f"came from {letter.get('queue')!r}, not {source!r}"}
        )
        return
    original = letter["message"]
    target: Target | None = None
    if hooks is not None:
        try:
            target = hooks.parse(original)
        except PoisonMessage:
            target = None  # sent back as it is: the operator asked, the worker will judge
    moved = 0
    if target is not None:
        if target.job_id is not None:
            job = await conn.fetchrow(Q["lock_job"], target.job_id)
            if job is not None and job["status"] == "cancelled":
                result.skipped.append(
                    {
                        "id": msg_id,
                        "reason": f"job {target.job_id} is cancelled; retry the job instead",
                    }
                )
                return
        moved = await _reopen(conn, target, hooks)
    await queue.send(conn, source, original)
    await queue.delete(conn, dlq, [msg_id])
    result.replayed.append(msg_id)
    result.requeued_items += moved
    log.info(
        "dead_letter_replayed",
        queue=dlq,
        msg_id=msg_id,
        job_id=str(target.job_id) if target and target.job_id else None,
        items=moved,
    )


async def _reopen(conn: asyncpg.Connection, target: Target, hooks: QueueHooks | None) -> int:
    reopener = hooks.reopeners.get(target.kind) if hooks is not None else None
    if reopener is None:
        return 0
    moved = await reopener.reopen(conn, target.job_id, list(target.ids))
    if moved and target.job_id is not None:
        await conn.execute(Q["dlq_clear_failures"], target.job_id, reopener.kind, moved)
        await conn.execute(Q["dlq_reopen_job"], target.job_id, len(moved))
    return len(moved)
