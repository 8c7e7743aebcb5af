"""PGMQ through our own queries on our own connections (so enqueue joins the caller's
transaction). Queues stay standard PGMQ queues: any PGMQ client can read them."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from mnemo_core.queries import Q

EMBED = "embed"
EMBED_DLQ = "embed_dlq"
EMBED_QUERY = "embed_query"
INDEX = "index"
INDEX_DLQ = "index_dlq"

WORK_QUEUES = (EMBED, INDEX)


def dlq_of(queue: str) -> str:
    return f"{queue}_dlq"


@dataclass(frozen=True)
class Message:
    msg_id: int
    read_ct: int
    enqueued_at: dt.datetime
    body: Any

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> Message:
        body = r["message"]
        # Another PGMQ client may have put a JSON string holding an object on the queue.
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except ValueError:
                pass
        return cls(r["msg_id"], r["read_ct"], r["enqueued_at"], body)


async def send(conn: asyncpg.Connection, queue: str, body: dict[str, Any]) -> int:
    return int(await conn.fetchval(Q["send_message"], queue, body))


async def send_many(
    conn: asyncpg.Connection, queue: str, bodies: list[dict[str, Any]]
) -> list[int]:
    if not bodies:
        return []
    return [r[0] for r in await conn.fetch(Q["send_messages"], queue, bodies)]


async def read(
    conn: asyncpg.Connection, queue: str, *, vt: int, qty: int, poll_s: int = 0
) -> list[Message]:
    if poll_s > 0:
        rows = await conn.fetch(Q["read_messages_poll"], queue, vt, qty, poll_s, 100)
    else:
        rows = await conn.fetch(Q["read_messages"], queue, vt, qty)
    return [Message.from_record(r) for r in rows]


async def delete(conn: asyncpg.Connection, queue: str, msg_ids: list[int]) -> None:
    if msg_ids:
        await conn.fetch(Q["delete_messages"], queue, msg_ids)


async def release(
    conn: asyncpg.Connection, queue: str, msg_ids: list[int], delay_s: int = 0
) -> None:
    if msg_ids:
        await conn.fetch(Q["release_messages"], queue, msg_ids, delay_s)


async def dead_letter(conn: asyncpg.Connection, queue: str, msg: Message, error: str) -> None:
    """Move ``msg`` to ``<queue>_dlq`` with its error; call inside the caller's transaction."""
    await send(
        conn,
        dlq_of(queue),
        {
            "queue": queue,
            "msg_id": msg.msg_id,
            "read_ct": msg.read_ct,
            "enqueued_at": msg.enqueued_at.isoformat(),
            "error": error[:4000],
            "message": msg.body,
        },
    )
    await delete(conn, queue, [msg.msg_id])


@dataclass(frozen=True)
class QueueStats:
    queue: str
    depth: int
    visible: int
    in_flight: int
    oldest_age_s: int | None
    newest_age_s: int | None
    total_messages: int
    dead_letters: int | None

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


async def stats(conn: asyncpg.Connection) -> list[QueueStats]:
    """Figures for every work queue and its dead-letter queue. pgmq.metrics_all() counts rows:
    callers cache it rather than running it per request."""
    rows = {r["queue_name"]: r for r in await conn.fetch(Q["queue_metrics"])}
    out = []
    for name, r in sorted(rows.items()):
        if name.endswith("_dlq"):
            continue
        dlq = rows.get(dlq_of(name))
        depth = int(r["queue_length"])
        visible = int(r["queue_visible_length"] or 0)
        out.append(
            QueueStats(
                queue=name,
                depth=depth,
                visible=visible,
                in_flight=max(depth - visible, 0),
                oldest_age_s=r["oldest_msg_age_sec"],
                newest_age_s=r["newest_msg_age_sec"],
                total_messages=int(r["total_messages"]),
                dead_letters=int(dlq["queue_length"]) if dlq is not None else None,
            )
        )
    return out
