"""``Idempotency-Key`` on the API's writes (the event writes and the code upload): the key
read from the request, the write done in the transaction that claims it, the first answer
given back with ``Idempotent-Replayed: true``, expired keys purged. The claim itself, in
the caller's transaction, is :mod:`mnemo_core.idempotency`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from fastapi import Header, Request, Response

from mnemo_api.state import AppState
from mnemo_core import idempotency
from mnemo_core import logging as mlog
from mnemo_core.errors import InvalidInput

log = mlog.get(__name__)

#: Expired idempotency keys are deleted at most this often per API process.
PURGE_EVERY_S = 60.0

#: The answer's header on a replay, documented on every route that takes a key.
REPLAYED = {
    "Idempotent-Replayed": {
        "description": "true: the answer of an earlier request with the same Idempotency-Key;"
        " nothing was stored",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def header(instead: str) -> Any:
    """The documented ``Idempotency-Key`` parameter of a route whose repeat, with a key,
    gets the first answer back ``instead`` of doing its write again. Documented only:
    :func:`key_of` reads every line of the header, and its 422 says what is wrong in our
    words."""
    return Header(
        alias=idempotency.HEADER,
        description="Any unique string (a UUID, say) of 1 to 255 printable ASCII "
        'characters, in double quotes or not ("k" and k are the same key), given once. Sent '
        "again with the same request (a retry after a lost answer), it gets the first answer "
        f"back, with `Idempotent-Replayed: true`, instead of {instead}; with "
        "another request, a 422. Kept for MNEMO_IDEMPOTENCY_TTL_S.",
        json_schema_extra={"minLength": 1, "maxLength": idempotency.MAX_KEY_CHARS + 2},
    )


@dataclass(frozen=True)
class Key:
    """A request's idempotency key and its scope, the route (``POST /v1/events``): the
    same key on another route is another key."""

    scope: str
    key: str


def key_of(http: Request) -> Key | None:
    """The ``Idempotency-Key`` of a request, or None: printable ASCII, in double quotes
    (the IETF draft's structured-field string) or not; one header line."""
    given = http.headers.getlist(idempotency.HEADER)
    if not given:
        return None
    if len(given) > 1:
        raise InvalidInput(f"header.{idempotency.HEADER}", "given more than once")
    raw = given[0]
    key = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    if not (1 <= len(key) <= idempotency.MAX_KEY_CHARS and key.isascii() and key.isprintable()):
        raise InvalidInput(
            f"header.{idempotency.HEADER}",
            f"must be 1 to {idempotency.MAX_KEY_CHARS} printable ASCII characters",
        )
    return Key(f"{http.method} {http.url.path}", key)


async def once(
    st: AppState,
    key: Key,
    fingerprint: bytes,
    work: Callable[[asyncpg.Connection], Awaitable[idempotency.Answer]],
    response: Response,
) -> idempotency.Answer:
    """``work``'s answer, done in the transaction that claims ``key`` and records the
    answer; or, when the key has one already, that answer (``Idempotent-Replayed: true`` on
    ``response``) if ``fingerprint`` identifies the same request, else a 422. A refusal
    raised by ``work`` rolls the claim back with the rest: the key stays unused."""
    ttl_s = st.settings.idempotency_ttl_s

    async def claimed(conn: asyncpg.Connection) -> tuple[idempotency.Answer, bool]:
        first = await idempotency.claim(conn, key.scope, key.key, fingerprint, ttl_s=ttl_s)
        if first is not None:
            return first, True
        answer = await work(conn)
        await idempotency.record(conn, key.scope, key.key, answer)
        return answer, False

    answer, replayed = await st.transaction(claimed)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    await _purge_expired_keys(st)
    return answer


async def _purge_expired_keys(st: AppState) -> None:
    """Delete expired idempotency keys, at most every PURGE_EVERY_S in this process (at
    once again after a purge that hit its batch limit). Best effort: the request's own
    answer is committed by now, and a purge that fails is tried again later."""
    now = time.monotonic()
    if now < st.idempotency_purge_at:
        return
    st.idempotency_purge_at = now + PURGE_EVERY_S  # before the await: one purge at a time
    try:
        async with st.acquire() as conn:
            gone = await idempotency.purge(conn, ttl_s=st.settings.idempotency_ttl_s)
    except Exception as exc:  # never turns a stored write into an error
        log.warning("idempotency_purge_failed", error=str(exc) or type(exc).__name__)
        return
    if gone >= idempotency.PURGE_BATCH:
        st.idempotency_purge_at = 0.0
