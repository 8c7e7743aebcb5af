"""Idempotency keys: a write sent again with the same key answers as the first one did.

The event writes and the code upload are the API's non-idempotent routes: a client whose
connection dropped before the answer cannot know whether its events were stored (sending
them again stored them twice) or its upload made its job (sending it again made another).
With an ``Idempotency-Key`` header (the IETF httpapi draft's name, as Stripe and others use
it) the key is claimed in the transaction that does the write, and the answer is recorded
there too (``db/…/0006_idempotency_keys.sql``):

- a first request claims the key, does its work and records its answer, all or nothing;
- the same key again with the same request gets the recorded answer back;
- the same key with another request is refused (:class:`KeyReused`): it is a client bug;
- a second request arriving while the first is still in its transaction waits for it.

Written here rather than taken from a package: the claim has to live inside the caller's
database transaction, which the HTTP-level idempotency middlewares (a cache or a table of
their own, written after the answer) cannot do."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from mnemo_core.errors import InvalidInput
from mnemo_core.queries import Q

#: The header; at most this many characters, printable ASCII.
HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
#: Expired keys deleted by one purge, oldest first; a full purge lets the next run at once.
PURGE_BATCH = 10_000


@dataclass(frozen=True)
class Answer:
    """What the first request with a key answered."""

    status: int
    body: dict[str, Any]


class KeyReused(InvalidInput):
    """The key was used with a different request."""

    def __init__(self) -> None:
        super().__init__(
            f"header.{HEADER}",
            "already used for a different request; use a new key for a new request "
            "(a key is kept for MNEMO_IDEMPOTENCY_TTL_S after its first use)",
        )


def fingerprint(request: Any) -> bytes:
    """SHA-256 of a request as validated (JSON with sorted keys): the same request sent
    with other whitespace or key order is the same request."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


async def claim(
    conn: asyncpg.Connection, scope: str, key: str, request: bytes, *, ttl_s: float
) -> Answer | None:
    """Claim ``key`` for this transaction (None: go on, then :func:`record`), or the answer
    the key already has. Must run inside the transaction that does the work."""
    for _ in range(3):
        if await conn.fetchval(Q["claim_idempotency_key"], scope, key, request, float(ttl_s)):
            return None
        # A new statement, so a new snapshot: it sees the answer of the transaction that
        # held the key, which the claim above waited for.
        row = await conn.fetchrow(Q["idempotent_answer"], scope, key)
        if row is None:  # expired and purged between the two statements: claim it again
            continue
        if row["status"] is None:  # cannot be: a claim commits with its answer
            raise AssertionError(f"idempotency key {key!r} of {scope} has no answer")
        if bytes(row["fingerprint"]) != request:
            raise KeyReused()
        return Answer(int(row["status"]), row["response"])
    raise AssertionError(f"idempotency key {key!r} of {scope}: neither claimed nor answered")


async def record(conn: asyncpg.Connection, scope: str, key: str, answer: Answer) -> None:
    """Store the answer of a key this transaction claimed."""
    await conn.execute(Q["store_idempotent_answer"], scope, key, answer.status, answer.body)


async def purge(conn: asyncpg.Connection, *, ttl_s: float, limit: int = PURGE_BATCH) -> int:
    """Delete up to ``limit`` expired keys; returns how many went."""
    return int(await conn.fetchval(Q["purge_idempotency_keys"], float(ttl_s), limit))
