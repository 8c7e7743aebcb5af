"""``POST /v1/events`` has a fast path beside FastAPI's route (routes/events.py,
CreateEventFastPath). It must answer every request exactly as the route alone does, and it
must actually be the one answering well-formed events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from mnemo_api.app import create_app
from mnemo_api.routes.events import _SLOW_PATH, CreateEventFastPath
from tests.integration.test_api import make_settings

JSON = {"content-type": "application/json"}
TEXT_EVENT = json.dumps({"content": {"text": "buy oat milk"}}).encode()


def body(**fields: Any) -> bytes:
    return json.dumps({"content": {"text": "x"}, **fields}).encode()


# (label, body, headers): every kind of answer the route gives, and the fast path's edges.
CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("text event", TEXT_EVENT, JSON),
    (
        "metadata and timestamp",
        json.dumps(
            {
                "content": {"text": "standup at 10", "who": ["ana", "bo"]},
                "metadata": {"source": "cal", "n": 3},
                "timestamp": "2026-11-30T10:00:00+01:00",
            }
        ).encode(),
        JSON,
    ),
    ("charset parameter", TEXT_EVENT, {"content-type": "application/json; charset=utf-8"}),
    ("upper-case media type", TEXT_EVENT, {"content-type": "Application/JSON"}),
    ("+json media type", TEXT_EVENT, {"content-type": "application/vnd.mnemo+json"}),
    ("own embedding", body(embedding=[0.5] * 384), JSON),
    ("nothing to embed", json.dumps({"content": {"n": 1}}).encode(), JSON),
    ("naive timestamp", body(timestamp="2026-01-01T00:00:00"), JSON),
    ("wrong dimension", body(embedding=[0.5] * 3), JSON),
    ("boolean in the embedding", body(embedding=[True] * 384), JSON),
    ("unknown field", body(colour="red"), JSON),
    ("content not an object", json.dumps({"content": "x"}).encode(), JSON),
    ("no content", b"{}", JSON),
    ("array body", b"[1, 2]", JSON),
    ("not JSON", b"{content: 1", JSON),
    ("empty body", b"", JSON),
    ("NaN", b'{"content": {"text": "x", "v": NaN}}', JSON),
    ("NUL in a string", json.dumps({"content": {"text": "a\x00b"}}).encode(), JSON),
    ("lone surrogate", b'{"content": {"text": "\\ud800"}}', JSON),
    ("not UTF-8", b'{"content": {"text": "\xff\xfe"}}', JSON),
    ("nested too deep", b'{"content": {"d": ' + b"[" * 5000 + b"]" * 5000 + b"}}", JSON),
    ("text/plain", TEXT_EVENT, {"content-type": "text/plain"}),
    ("no content type", TEXT_EVENT, {}),
]


def _shape(r: httpx.Response) -> tuple[int, Any, str | None]:
    """The answer without what is generated per request (ids)."""
    body = r.json()
    if r.status_code < 300:
        body = {k: (bool(v) if k in ("event_id", "job_id") else v) for k, v in body.items()}
    return r.status_code, body, r.headers.get("content-type")


class _Seen:
    """Outermost ASGI wrapper: records, per request, whether it went the slow way."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.slow: list[bool] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            self.slow.append(bool(scope.get(_SLOW_PATH)))


async def _client(dsn: str, *, fast: bool) -> AsyncIterator[tuple[httpx.AsyncClient, _Seen]]:
    app = create_app(make_settings(dsn))
    if not fast:
        app.router.routes[:] = [
            r for r in app.router.routes if not isinstance(r, CreateEventFastPath)
        ]
    seen = _Seen(app)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=seen, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            yield c, seen


@pytest.fixture
async def both(dsn: str) -> AsyncIterator[tuple[httpx.AsyncClient, _Seen, httpx.AsyncClient]]:
    async for fast, seen in _client(dsn, fast=True):
        async for route_only, _ in _client(dsn, fast=False):
            yield fast, seen, route_only


async def test_the_fast_path_is_first_and_undocumented(dsn: str) -> None:
    app = create_app(make_settings(dsn))
    assert isinstance(app.router.routes[0], CreateEventFastPath)
    spec = app.openapi()
    assert "requestBody" in spec["paths"]["/v1/events"]["post"]  # FastAPI's route documents it


async def test_answers_like_the_route_alone(
    both: tuple[httpx.AsyncClient, _Seen, httpx.AsyncClient], dsn: str
) -> None:
    fast, seen, route_only = both
    conn = await asyncpg.connect(dsn)
    slow: dict[str, bool] = {}
    try:
        for label, raw, headers in CASES:
            before = await conn.fetchval("SELECT count(*) FROM events")
            a = await fast.post("/v1/events", content=raw, headers=headers)
            slow[label] = seen.slow[-1]
            middle = await conn.fetchval("SELECT count(*) FROM events")
            b = await route_only.post("/v1/events", content=raw, headers=headers)
            after = await conn.fetchval("SELECT count(*) FROM events")
            assert _shape(a) == _shape(b), label
            assert a.status_code < 500, (label, a.text)
            # Stored exactly once by each, or not at all by either.
            stored = 1 if a.status_code < 300 else 0
            assert (middle - before, after - middle) == (stored, stored), label
            if a.status_code < 300:
                ev = (await fast.get(f"/v1/events/{a.json()['event_id']}")).json()
                assert ev["content"] == json.loads(raw)["content"], label
    finally:
        await conn.close()
    # Fast: plain JSON that validates. Everything else is answered by FastAPI's route.
    assert {label for label, was_slow in slow.items() if not was_slow} == {
        "text event",
        "metadata and timestamp",
        "charset parameter",
        "upper-case media type",
        "own embedding",
        "nothing to embed",
        "naive timestamp",
    }


async def test_other_methods_and_limits_unchanged(
    both: tuple[httpx.AsyncClient, _Seen, httpx.AsyncClient],
) -> None:
    fast, _, route_only = both
    for client in (fast, route_only):
        assert (await client.get("/v1/events")).status_code == 200  # the listing
        r = await client.put("/v1/events")
        assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    huge = json.dumps({"content": {"text": "x" * 9_000_000}}).encode()
    a = await fast.post("/v1/events", content=huge, headers=JSON)
    b = await route_only.post("/v1/events", content=huge, headers=JSON)
    assert a.status_code == b.status_code == 413 and a.json() == b.json()


async def test_a_streamed_body_is_read_whole(
    both: tuple[httpx.AsyncClient, _Seen, httpx.AsyncClient],
) -> None:
    fast, seen, _ = both

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(TEXT_EVENT), 5):
            yield TEXT_EVENT[i : i + 5]

    r = await fast.post("/v1/events", content=pieces(), headers=JSON)
    assert r.status_code == 202, r.text
    assert seen.slow[-1] is False
