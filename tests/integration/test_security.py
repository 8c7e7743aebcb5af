"""Hostile input: SQL injection strings in every parameter, NUL bytes, lone surrogates,
deep nesting. Every answer is a clear 4xx or a normal result; nothing is stored half; the
database is intact."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.integration.test_api import client_for, make_settings

INJECTIONS = [
    "'; DROP TABLE events; --",
    '" OR 1=1 --',
    "x') UNION SELECT password FROM pg_shadow --",
    "$$; DELETE FROM jobs; $$",
    "%' OR '%'='",
    "\\'; SELECT pg_sleep(5); --",
    "a & b | !c <-> d:*",  # tsquery syntax
    "../../etc/passwd",
    '{"$ne": null}',
]


@pytest.fixture
async def api(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(make_settings(dsn)):
        yield c


async def intact(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return (
            await conn.fetchval("SELECT count(*) FROM events"),
            await conn.fetchval("SELECT count(*) FROM jobs"),
        )
    finally:
        await conn.close()


async def test_injection_strings_are_data(api: httpx.AsyncClient, dsn: str) -> None:
    canary = await api.post("/v1/events", json={"content": {"text": "canary"}})
    await api.post(
        "/v1/code/index",
        json={
            "repository": "r",
            "files": [{"path": "a.py", "content": "def f():\n    return 1\n"}],
        },
    )
    before = await intact(dsn)
    answers: list[tuple[str, int]] = []
    for s in INJECTIONS:
        calls = [
            api.post("/v1/events", json={"content": {"text": s, s: s}, "metadata": {s: [s]}}),
            api.get("/v1/search", params={"q": s}),
            api.post("/v1/search", json={"vector": [0.1] * 384, "filter_metadata": {s: s}}),
            api.get("/v1/search", params={"q": "x", "filter_metadata": json.dumps({s: s})}),
            api.get("/v1/jobs", params={"kind": s}),
            api.get("/v1/jobs", params={"status": s}),
            api.get("/v1/jobs", params={"cursor": s}),
            api.get(f"/v1/events/{s}"),
            api.get(f"/v1/jobs/{s}"),
            api.get("/v1/code/search", params={"q": s, "mode": "lexical"}),
            api.get(
                "/v1/code/search",
                params={"q": "f", "mode": "lexical", "language": s, "kind": s, "path_prefix": s},
            ),
            api.get("/v1/code/search", params={"q": "f", "repository": s}),
            api.get(f"/v1/code/graph/r/symbols/{s}"),
            api.get(f"/v1/code/graph/{s}/symbols/x"),
            api.post("/v1/code/graph/traverse", json={"repository": "r", "start": s}),
            api.get("/v1/code/graph/r/path", params={"from": s, "to": s}),
            api.delete(f"/v1/code/repositories/{s}"),
            api.post(
                "/v1/code/index",
                json={"repository": "r", "commit": s, "files": [{"path": "b.py", "content": s}]},
            ),
        ]
        for call in calls:
            r = await call
            answers.append((str(r.request.url), r.status_code))
            no_embedder = r.status_code == 503 and "embedder" in r.json()["detail"]
            assert r.status_code < 500 or no_embedder, (r.request.url, r.status_code, r.text)
    events, jobs = await intact(dsn)
    assert events == before[0] + len(INJECTIONS)  # each posted event stored as data
    assert jobs >= before[1]
    got = (await api.get(f"/v1/events/{canary.json()['event_id']}")).json()
    assert got["content"] == {"text": "canary"}
    stored = (await api.get("/v1/code/repositories")).json()["repositories"]
    assert [r["name"] for r in stored] == ["r"]


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"content": {"text": "a\u0000b"}}, "NUL"),
        ({"content": {"text": "ok"}, "metadata": {"k\u0000": 1}}, "NUL"),
        ({"content": {"text": "\ud800"}}, "surrogate"),
        ({"content": {"text": "x", "deep": json.loads("[" * 40 + "]" * 40)}}, "nested deeper"),
    ],
)
async def test_unstorable_json_is_refused(
    api: httpx.AsyncClient, dsn: str, payload: dict, needle: str
) -> None:
    body = json.dumps(payload)  # keeps \ud800 as an escape, like a hostile client would send
    r = await api.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"] and r.json()["detail"].startswith("body.")
    assert (await intact(dsn))[0] == 0


async def test_filter_shape_and_search_text(api: httpx.AsyncClient) -> None:
    deep = json.dumps(json.loads('{"a":' * 10 + "1" + "}" * 10))
    r = await api.get("/v1/search", params={"q": "x", "filter_metadata": deep})
    assert r.status_code == 422 and "nested deeper" in r.json()["detail"]
    r = await api.post(
        "/v1/search", content='{"q": "\\u0000"}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    r = await api.post(
        "/v1/code/search", content='{"q": "\\ud800x"}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    r = await api.post(
        "/v1/code/index",
        content=json.dumps({"repository": "r", "files": [{"path": "\ud800.py", "content": ""}]}),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422


VEC_TAIL = ", 0.1" * 383
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "kw", "field"),
    [
        ("get", "/v1/jobs", {"params": {"kind": "a\x00b"}}, "query.kind"),
        ("get", "/v1/code/graph/r/symbols/a%00b", {}, "path.qualified_name"),
        ("get", "/v1/code/graph/a%00b/symbols/x", {}, "path.repository"),
        ("get", "/v1/code/graph/r/path", {"params": {"from": "a\x00", "to": "b"}}, "query.from"),
        ("delete", "/v1/code/repositories/a%00b", {}, "path.name"),
        ("delete", "/v1/code/repositories/-rf", {}, "path.name"),
        (
            "post",
            "/v1/search",
            {"content": '{"vector": [1e999' + VEC_TAIL + "]}", "headers": JSON},
            "body.vector",
        ),
        (
            "post",
            "/v1/events",
            {"content": '{"content": {"text": "x", "n": -1e999}}', "headers": JSON},
            "body.content",
        ),
        (
            "get",
            "/v1/search",
            {"params": {"q": "x", "filter_metadata": '{"a": 1e999}'}},
            "query.filter_metadata",
        ),
    ],
)
async def test_bad_values_are_named_before_the_database_sees_them(
    api: httpx.AsyncClient, method: str, path: str, kw: dict, field: str
) -> None:
    """NUL characters, unsafe names and infinite numbers in parameters are refused by
    validation, naming the parameter, never by a PostgreSQL error message."""
    r = await getattr(api, method)(path, **kw)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(field + ":"), r.json()
    assert "invalid value" not in r.json()["detail"]


@pytest.mark.parametrize(
    "path",
    ["/v1/code/index", "/v1/events", "/v1/events/batch", "/v1/search", "/v1/code/search"],
)
@pytest.mark.parametrize("depth", [5_000, 100_000])
async def test_json_nested_past_the_parser_is_a_400(
    api: httpx.AsyncClient, dsn: str, path: str, depth: int
) -> None:
    """Nesting the JSON parser gives up on (RecursionError) is an unreadable body on every
    route, the code index included (it used to answer 500)."""
    body = '{"repository": "r", "files": ' + "[" * depth + "]" * depth + "}"
    r = await api.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json() == {"detail": "body: JSON nested too deeply to read"}
    assert await intact(dsn) == (0, 0)
    assert (await api.get("/v1/code/repositories")).json()["repositories"] == []
