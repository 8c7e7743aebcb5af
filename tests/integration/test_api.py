"""The API in-process (httpx ASGI transport) against the real database."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from mnemo_api.app import create_app
from mnemo_core.settings import Settings
from mnemo_embedder.model import HashModel
from mnemo_embedder.worker import EmbedWorker
from tests.helpers import DIM, wait_for

MODEL = "hash-384"


def make_settings(dsn: str, **kw: object) -> Settings:
    base: dict[str, object] = {"database_url": dsn, "embedding_model": MODEL, "query_timeout_s": 3}
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            yield c


@pytest.fixture
async def api(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(make_settings(dsn)):
        yield c


async def drain(dsn: str) -> None:
    from mnemo_core import db

    pool = await db.create_pool(dsn, application_name="test-drain")
    try:
        w = EmbedWorker(pool, HashModel(384), make_settings(dsn), worker_id="drain", once=True)
        await asyncio.wait_for(w.run(), 30)
    finally:
        await pool.close()


async def test_health_and_ready(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).json() == {"status": "ok"}
    r = await api.get("/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    assert (await api.get("/openapi.json")).status_code == 200
    # Monitors that probe with HEAD get the same status.
    assert (await api.head("/health")).status_code == 200
    assert (await api.head("/ready")).status_code == 200


async def test_event_lifecycle(api: httpx.AsyncClient, dsn: str) -> None:
    r = await api.post(
        "/v1/events", json={"content": {"text": "buy oat milk"}, "metadata": {"t": 1}}
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["job_id"]
    job = (await api.get(f"/v1/jobs/{body['job_id']}")).json()
    assert job["status"] == "queued" and job["progress"] == {"total": 1, "done": 0, "failed": 0}
    await drain(dsn)
    job = (await api.get(f"/v1/jobs/{body['job_id']}")).json()
    assert job["status"] == "succeeded" and job["finished_at"]
    ev = (await api.get(f"/v1/events/{body['event_id']}")).json()
    assert ev["embedding_status"] == "done" and ev["embedding_model"] == MODEL
    r = await api.patch(f"/v1/events/{body['event_id']}/metadata", json={"metadata": {"u": 2}})
    assert r.json()["metadata"] == {"t": 1, "u": 2}
    # Keys are removed by name (null is a value like any other), then the rest is merged.
    patch = {"metadata": {"u": None, "v": 3}, "remove": ["t", "absent"]}
    r = await api.patch(f"/v1/events/{body['event_id']}/metadata", json=patch)
    assert r.json()["metadata"] == {"u": None, "v": 3}
    r = await api.patch(f"/v1/events/{body['event_id']}/metadata", json={"remove": ["u"]})
    assert r.json()["metadata"] == {"v": 3}
    r = await api.patch(f"/v1/events/{body['event_id']}/metadata", json={})
    assert r.status_code == 422 and "keys to remove" in r.json()["detail"], r.json()
    assert (await api.delete(f"/v1/events/{body['event_id']}")).status_code == 204
    assert (await api.get(f"/v1/events/{body['event_id']}")).status_code == 404


async def test_client_embedding_skips_the_queue(api: httpx.AsyncClient) -> None:
    vec = [0.0] * 383 + [1.0]
    r = await api.post("/v1/events", json={"content": {"text": "x"}, "embedding": vec})
    assert r.status_code == 201 and r.json() == {
        "event_id": r.json()["event_id"],
        "job_id": None,
        "status": "stored",
    }
    found = (await api.post("/v1/search", json={"vector": vec, "limit": 1})).json()
    assert found["results"][0]["id"] == r.json()["event_id"]
    assert found["results"][0]["score"] == pytest.approx(1.0)


async def test_event_without_text_is_stored(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/events", json={"content": {"n": 1}})
    assert r.status_code == 201 and r.json()["status"] == "stored"


async def test_batch(api: httpx.AsyncClient, dsn: str) -> None:
    events = [{"content": {"text": f"batch note {i}"}, "metadata": {"i": i}} for i in range(100)]
    r = await api.post("/v1/events/batch", json={"events": events})
    assert r.status_code == 202
    body = r.json()
    assert len(body["event_ids"]) == 100 and body["queued"] == 100
    await drain(dsn)
    job = (await api.get(f"/v1/jobs/{body['job_id']}")).json()
    assert job["progress"] == {"total": 100, "done": 100, "failed": 0}
    vec_of = (await api.get(f"/v1/events/{body['event_ids'][7]}")).json()
    assert vec_of["metadata"] == {"i": 7}


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/v1/events", {"metadata": {}}, "body.content"),
        ("/v1/events", {"content": "text"}, "body.content"),
        ("/v1/events", {"content": {}, "timestamp": "yesterday"}, "body.timestamp"),
        ("/v1/events", {"content": {}, "embedding": [1.0, 2.0]}, "body.embedding"),
        ("/v1/events", {"content": {}, "surprise": 1}, "body.surprise"),
        ("/v1/events/batch", {"events": []}, "body.events"),
        ("/v1/search", {"limit": 5}, "body"),
        ("/v1/search", {"q": "x", "vector": [1.0]}, "body"),
        ("/v1/search", {"vector": [1.0, 2.0]}, "body.vector"),
        ("/v1/search", {"q": "x", "limit": 0}, "body.limit"),
        # JSON true is not a count (pydantic took it as 1).
        ("/v1/search", {"q": "x", "limit": True}, "body.limit: expected a whole number"),
        ("/v1/search", {"q": "x", "limit": "5"}, "body.limit: expected a whole number, not a"),
        # Nor is it a vector's 1.0, nor a string its number.
        ("/v1/events", {"content": {}, "embedding": [True] * DIM}, "body.embedding.0"),
        ("/v1/search", {"vector": ["0.5"] * DIM}, "body.vector.0"),
        # Times whose UTC date is outside years 1-9999 (the driver's own error used to be
        # the answer, naming a query argument).
        ("/v1/events", {"content": {}, "timestamp": "0001-01-01T00:00:00+14:00"}, "body.timestamp"),
        (
            "/v1/events/batch",
            {"events": [{"content": {}, "timestamp": "9999-12-31T23:59:59-14:00"}]},
            "body.events.0.timestamp",
        ),
        ("/v1/search", {"q": "x", "ts_start": "0001-01-01T00:00:00+01:00"}, "body.ts_start"),
        # The first and last instants: the driver stored them as -infinity and infinity.
        ("/v1/events", {"content": {}, "timestamp": "0001-01-01T00:00:00Z"}, "body.timestamp"),
        (
            "/v1/events",
            {"content": {}, "timestamp": "9999-12-31T23:59:59.999999Z"},
            "body.timestamp",
        ),
        ("/v1/search", {"q": "x", "ts_end": "9999-12-31T23:59:59.999999"}, "body.ts_end"),
        # A blank query has nothing to compare with (the model embedded it all the same).
        ("/v1/search", {"q": " \t\n"}, "body.q"),
        # Vectors pgvector cannot compare by cosine: all zeros (every score was null), and
        # values or lengths beyond 32-bit floats.
        ("/v1/events", {"content": {}, "embedding": [0.0] * DIM}, "body.embedding"),
        ("/v1/events", {"content": {}, "embedding": [1e-45] * DIM}, "body.embedding"),
        ("/v1/events", {"content": {}, "embedding": [1e300] * DIM}, "body.embedding"),
        ("/v1/search", {"vector": [0.0] * DIM}, "body.vector"),
        ("/v1/search", {"vector": [1e20] * DIM}, "body.vector"),
    ],
)
async def test_bad_input_names_the_field(
    api: httpx.AsyncClient, path: str, payload: dict, field: str
) -> None:
    r = await api.post(path, json=payload)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(field), r.json()


async def test_a_405_names_every_method_served_at_the_path(api: httpx.AsyncClient) -> None:
    """Starlette's 405 named the first matching route's methods only (``Allow: POST`` on
    /v1/events, which GET serves too), and a method a fixed path does not serve reached the
    parameter route beside it (GET /v1/events/batch was a 422 on ``path.event_id``)."""
    cases = {
        ("OPTIONS", "/v1/events"): "GET, POST",
        ("PUT", "/v1/events"): "GET, POST",
        ("GET", "/v1/events/batch"): "POST",
        ("DELETE", "/v1/events/batch"): "POST",
        ("OPTIONS", "/v1/events/batch"): "POST",
        ("PUT", f"/v1/events/{uuid.uuid4()}"): "GET, DELETE",
        ("OPTIONS", "/health"): "GET, HEAD",
        ("GET", f"/v1/jobs/{uuid.uuid4()}/cancel"): "POST",
        ("POST", "/metrics"): "GET",
    }
    for (method, path), allow in cases.items():
        r = await api.request(method, path)
        assert (r.status_code, r.headers.get("allow")) == (405, allow), (method, path, r.text)
        assert r.json()["detail"] == f"method {method} is not allowed on {path} (allowed: {allow})"
    # A parameter that is not valid is still named, where no fixed path is involved.
    r = await api.get("/v1/events/not-an-id")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "path.event_id"


async def test_a_path_no_route_serves_is_a_404_naming_it_and_the_right_one(
    api: httpx.AsyncClient,
) -> None:
    """A trailing slash got a 307 to the path without it: no body (curl printed nothing),
    an empty answer for clients that do not follow redirects, and for those that do, the
    body and the key sent again to a URL built from the Host header and the API's scheme.
    It is a 404 now that names the path the API does serve."""
    cases = {
        ("POST", "/v1/events/"): "no route at /v1/events/; did you mean /v1/events?",
        ("GET", "/v1/jobs/"): "no route at /v1/jobs/; did you mean /v1/jobs?",
        ("GET", "/health//"): "no route at /health//; did you mean /health?",
        ("GET", "/v1/queues/x/"): "no route at /v1/queues/x/",
        ("GET", "/v1/nothing"): "no route at /v1/nothing",
    }
    for (method, path), detail in cases.items():
        body = {"content": {"text": "x"}} if method == "POST" else None
        r = await api.request(method, path, json=body)
        assert r.status_code == 404 and "location" not in r.headers, (path, r.headers)
        assert r.json() == {"detail": detail}, (path, r.text)
    # A route's own 404 (an unknown id) is as before.
    r = await api.get(f"/v1/jobs/{uuid.uuid4()}")
    assert r.status_code == 404 and r.json()["detail"].startswith("job "), r.text


async def test_unknown_query_parameters_are_refused(api: httpx.AsyncClient) -> None:
    """A misspelt filter (`filter` for `filter_metadata`) widened the search silently."""
    r = await api.get("/v1/search", params={"q": "x", "filter": '{"tag": "home"}'})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("query.filter: unknown query parameter"), r.json()
    assert "filter_metadata" in r.json()["detail"]
    r = await api.get("/v1/jobs", params={"limit": 1, "offset": 5, "page": 2})
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["query.offset", "query.page"]
    # The single-event fast path hands such a request to the route, which refuses it.
    r = await api.post("/v1/events", params={"wait": 1}, json={"content": {"text": "a"}})
    assert r.status_code == 422 and r.json()["detail"].startswith("query.wait"), r.json()
    assert (await api.get("/v1/jobs", params={"limit": 1})).status_code == 200
    assert (await api.post("/v1/events", json={"content": {"text": "a"}})).status_code == 202


async def test_validation_messages_are_the_validators_own_words(api: httpx.AsyncClient) -> None:
    """No "Value error, " from pydantic, and a check of the whole query names the query."""
    r = await api.get(
        "/v1/search", params={"q": "x", "ts_start": "2026-02-01", "ts_end": "2026-01-01"}
    )
    assert r.status_code == 422
    assert r.json()["detail"] == "query: ts_start is after ts_end", r.json()
    r = await api.post("/v1/search", json={"q": "x", "vector": [1.0]})
    assert r.json()["detail"] == "body: give exactly one of q (text) or vector", r.json()


async def test_a_cursor_beyond_the_databases_dates_is_not_a_cursor(
    api: httpx.AsyncClient,
) -> None:
    import base64

    for at in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-01-01T00:00:00"):
        text = f"{at}|00000000-0000-0000-0000-000000000000"
        r = await api.get("/v1/jobs", params={"cursor": base64.urlsafe_b64encode(text.encode())})
        assert r.status_code == 422
        assert r.json()["detail"] == "query.cursor: not a cursor returned by this API"


async def test_a_number_too_long_to_read_is_a_422_naming_the_body(api: httpx.AsyncClient) -> None:
    body = '{"content": {"text": "a"}, "metadata": {"n": ' + "9" * 5000 + "}}"
    r = await api.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"].startswith("body: a number"), r.text


async def test_search_is_exact_on_a_small_skewed_store(dsn: str) -> None:
    """A few distinct memories stored first, then thousands of near-identical ones: HNSW
    lost up to a third of the true top 10 on such data (its graph leaves the first ones
    hard to reach). While the table is small, search compares every vector instead."""
    import numpy as np

    from mnemo_core import db
    from mnemo_core.queries import Q

    rng = np.random.default_rng(7)

    def unit(v: np.ndarray) -> list[float]:
        return (v / np.linalg.norm(v)).astype(np.float32).tolist()

    distinct = [rng.normal(size=DIM) for _ in range(25)]
    base = rng.normal(size=DIM)
    cluster = [unit(base + 0.02 * rng.normal(size=DIM)) for _ in range(3000)]
    async for api in client_for(make_settings(dsn)):
        ids = []
        for v in distinct:
            r = await api.post("/v1/events", json={"content": {}, "embedding": unit(v)})
            assert r.status_code == 201
            ids.append(r.json()["event_id"])
        for i in range(0, len(cluster), 1000):
            events = [{"content": {}, "embedding": v} for v in cluster[i : i + 1000]]
            r = await api.post("/v1/events/batch", json={"events": events})
            assert r.status_code == 201, r.text
        conn = await db.connect(dsn, application_name="test-exact")
        try:
            for want, v in zip(ids, distinct, strict=True):
                q = unit(v + 0.3 * rng.normal(size=DIM))
                r = await api.post("/v1/search", json={"vector": q, "limit": 10})
                got = [e["id"] for e in r.json()["results"]]
                async with conn.transaction():
                    await conn.execute("SET LOCAL enable_indexscan = off")
                    exact = [
                        str(x["id"])
                        for x in await conn.fetch(
                            "SELECT id FROM events ORDER BY embedding <=> $1 LIMIT 10",
                            np.asarray(q, dtype=np.float32),
                        )
                    ]
                assert got[0] == want and got == exact
            # The exact branch is the one that ran; with a bound of 0, the index's.
            for bound, ran in ((16 << 20, "Seq Scan on events"), (0, "Index Scan using")):
                plan = "\n".join(
                    r[0]
                    for r in await conn.fetch(
                        "EXPLAIN (ANALYZE, COSTS OFF) " + Q["search_events"],
                        np.asarray(distinct[0], dtype=np.float32),
                        MODEL,
                        None,
                        None,
                        None,
                        10,
                        bound,
                    )
                )
                [line] = [x for x in plan.splitlines() if ran in x]
                assert "never executed" not in line, plan
        finally:
            await conn.close()


async def test_batch_over_the_limit(dsn: str) -> None:
    async for api in client_for(make_settings(dsn, max_batch_events=5)):
        r = await api.post("/v1/events/batch", json={"events": [{"content": {}}] * 6})
        assert r.status_code == 422 and "at most 5" in r.json()["detail"]


async def test_body_limit(dsn: str) -> None:
    async for api in client_for(make_settings(dsn, max_body_bytes=1000)):
        r = await api.post("/v1/events", json={"content": {"text": "x" * 2000}})
        assert r.status_code == 413 and "1000 bytes" in r.json()["detail"]


async def test_streamed_body_over_the_limit_is_413(dsn: str) -> None:
    """No Content-Length (chunked): the limit is enforced while the body streams in."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"content": {"text": "'
        for _ in range(10):
            yield b"x" * 200
        yield b'"}}'

    async for api in client_for(make_settings(dsn, max_body_bytes=1000)):
        r = await api.post(
            "/v1/events", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413, r.text
        assert "1000 bytes" in r.json()["detail"]
        assert "MNEMO_MAX_BODY_BYTES" in r.json()["detail"]


async def test_body_that_is_not_utf8_is_named(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/v1/events",
        content=b'{"content": {"text": "caf\xe9"}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("body: is not valid UTF-8")


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b'{"content": }', "body: invalid JSON at character 12: Expecting value"),
        (b'{"content": {"text": "x"}', "body: invalid JSON at character 25: Expecting ',' "),
        (b"not json", "body: invalid JSON at character 0: Expecting value"),
    ],
)
async def test_body_that_is_not_json_says_where(
    api: httpx.AsyncClient, raw: bytes, detail: str
) -> None:
    r = await api.post("/v1/events", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(detail), r.json()
    assert r.json()["errors"][0]["field"] == "body"


BODY_ROUTES = [
    ("POST", "/v1/events", {"content": {"text": "the cat sat"}}),
    ("POST", "/v1/events/batch", {"events": [{"content": {"text": "the cat sat"}}]}),
    ("POST", "/v1/search", {"q": "cat"}),
    ("POST", "/v1/code/index", {"repository": "r", "files": [{"path": "a.py", "content": "x"}]}),
    ("POST", "/v1/dlq/embed/replay", {"ids": [1]}),
]


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [*BODY_ROUTES, ("PATCH", f"/v1/events/{uuid.uuid4()}/metadata", {"done": True})],
)
@pytest.mark.parametrize(
    "ctype", ["application/x-www-form-urlencoded", "text/plain", "application/xml", None]
)
async def test_json_sent_as_something_else_is_415(
    api: httpx.AsyncClient, method: str, path: str, payload: dict, ctype: str | None
) -> None:
    """`curl -d '{…}'` without a header sends a form: 415 naming the Content-Type (or its
    absence), not a 422 saying the body is no object; nothing is stored."""
    headers = {"content-type": ctype} if ctype else {}
    r = await api.request(method, path, content=json.dumps(payload), headers=headers)
    assert r.status_code == 415, r.text
    detail = r.json()["detail"]
    assert detail.startswith("body: send it as application/json"), detail
    assert (repr(ctype) if ctype else "it has no Content-Type") in detail
    assert (await api.get("/v1/jobs")).json()["jobs"] == []


@pytest.mark.parametrize(("method", "path", "payload"), BODY_ROUTES)
@pytest.mark.parametrize(
    "ctype", ["application/json", "Application/JSON; charset=utf-8", "application/x+json"]
)
async def test_json_media_types_are_read(
    api: httpx.AsyncClient, method: str, path: str, payload: dict, ctype: str
) -> None:
    """Any case, parameters and ``+json`` types are all JSON."""
    r = await api.request(
        method, path, content=json.dumps(payload), headers={"content-type": ctype}
    )
    assert r.status_code in (200, 202, 503), r.text  # 503: text search with no embedder


async def test_api_keys(dsn: str) -> None:
    async for api in client_for(make_settings(dsn, api_keys="k1, k2")):
        assert (await api.get("/health")).status_code == 200
        assert (await api.get("/v1/queues")).status_code == 401
        assert (await api.get("/v1/queues", headers={"X-API-Key": "nope"})).status_code == 401
        assert (await api.get("/v1/queues", headers={"X-API-Key": "k2"})).status_code == 200


@pytest.mark.parametrize("site", ["cross-site", "same-site", "Cross-Site"])
async def test_cross_site_writes_from_browsers_are_403(api: httpx.AsyncClient, site: str) -> None:
    """A page of another site can POST a form here; browsers say so in Sec-Fetch-Site."""
    job = (await api.post("/v1/events", json={"content": {"text": "kept"}})).json()["job_id"]
    headers = {"sec-fetch-site": site}
    for r in (
        await api.post("/v1/events", json={"content": {"text": "x"}}, headers=headers),
        await api.post(
            "/v1/code/index",
            data={"repository": "r", "prune": "true"},
            files={"archive": ("r.tar", b"", "application/x-tar")},
            headers=headers,
        ),
        await api.post(f"/v1/jobs/{job}/cancel", headers=headers),
        await api.post("/v1/dlq/embed/replay", headers=headers),
        await api.delete(f"/v1/events/{uuid.uuid4()}", headers=headers),
    ):
        assert r.status_code == 403, r.text
        assert r.json()["detail"].startswith("refused: a page of another site cannot write")
    assert (await api.get(f"/v1/jobs/{job}", headers=headers)).json()["status"] == "queued"
    jobs = (await api.get("/v1/jobs", headers=headers)).json()["jobs"]
    assert [j["id"] for j in jobs] == [job]


@pytest.mark.parametrize("site", ["same-origin", "none", None])
async def test_own_and_non_browser_writes_pass_the_guard(
    api: httpx.AsyncClient, site: str | None
) -> None:
    """The operator page (same-origin), a typed URL (none) and curl or the CLI (no header)."""
    headers = {"sec-fetch-site": site} if site else {}
    r = await api.post("/v1/events", json={"content": {"text": "x"}}, headers=headers)
    assert r.status_code == 202, r.text
    r = await api.post(f"/v1/jobs/{r.json()['job_id']}/cancel", headers=headers)
    assert r.status_code == 200, r.text


async def test_without_sec_fetch_site_a_foreign_origin_cannot_write(
    api: httpx.AsyncClient,
) -> None:
    """Browsers too old to send Sec-Fetch-Site still send Origin with a cross-origin write:
    one that is not this server's own (host and port against Host; ``null``) is refused,
    as is a write that names another site in Sec-Fetch-Site whatever its Origin."""
    body = {"content": {"text": "x"}}
    for origin in ("http://evil.test", "null", "http://localhost:1", "http://127.0.0.1"):
        headers = {"origin": origin, "host": "127.0.0.1:8000"}
        r = await api.post("/v1/events", json=body, headers=headers)
        assert r.status_code == 403, (origin, r.text)
        assert r.json()["detail"] == (
            f"refused: a page of another site cannot write here (Origin: {origin})"
        )
    r = await api.post(
        "/v1/events",
        json=body,
        headers={"origin": "http://127.0.0.1:8000", "sec-fetch-site": "cross-site"},
    )
    assert r.status_code == 403 and "Sec-Fetch-Site: cross-site" in r.json()["detail"]
    # The server's own origin (a default port written or not), or a browser that says
    # same-origin, writes; reads are never refused.
    for origin, host, site in (
        ("http://127.0.0.1:8000", "127.0.0.1:8000", None),
        ("http://localhost", "localhost:80", None),
        ("http://evil.test", "127.0.0.1:8000", "same-origin"),
    ):
        headers = {"origin": origin, "host": host, **({"sec-fetch-site": site} if site else {})}
        r = await api.post("/v1/events", json=body, headers=headers)
        assert r.status_code == 202, (origin, r.text)
    r = await api.get("/v1/jobs", headers={"origin": "http://evil.test"})
    assert r.status_code == 200, r.text


async def test_without_keys_only_local_and_listed_host_names_are_served(dsn: str) -> None:
    """DNS rebinding: a page under its own name, pointed at 127.0.0.1, is refused."""
    async for api in client_for(make_settings(dsn, allowed_hosts="mnemo.lan")):
        for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "mnemo.lan:8000"):
            r = await api.get("/v1/jobs", headers={"host": host})
            assert r.status_code == 200, (host, r.text)
        for host in ("rebind.example:8000", "localhost.rebind.example"):
            for r in (
                await api.get("/v1/jobs", headers={"host": host}),
                await api.get("/health", headers={"host": host}),
                await api.post(
                    "/v1/events", json={"content": {"text": "x"}}, headers={"host": host}
                ),
            ):
                assert r.status_code == 400, (host, r.text)
                assert "MNEMO_ALLOWED_HOSTS" in r.json()["detail"]
                assert repr(host.rsplit(":", 1)[0]) in r.json()["detail"]
        assert (await api.get("/v1/jobs")).json()["jobs"] == []
    for settings in (make_settings(dsn, api_keys="k"), make_settings(dsn, allowed_hosts="*")):
        async for api in client_for(settings):
            r = await api.get("/health", headers={"host": "anything.example"})
            assert r.status_code == 200, r.text


async def test_every_answer_has_a_request_id(api: httpx.AsyncClient) -> None:
    ids = set()
    for r in (
        await api.get("/health"),
        await api.post("/v1/events", json={"content": {"text": "x"}}),  # the fast path
        await api.get(f"/v1/jobs/{uuid.uuid4()}"),
        await api.get("/v1/jobs", headers={"host": "rebind.example"}),
    ):
        rid = r.headers["x-request-id"]
        assert len(rid) == 32 and int(rid, 16) >= 0, rid
        ids.add(rid)
    assert len(ids) == 4
    r = await api.get("/health", headers={"x-request-id": "trace-1.2:3_x"})
    assert r.headers["x-request-id"] == "trace-1.2:3_x"
    for bad in ("a b", "x" * 129, "<script>", ""):
        r = await api.get("/health", headers={"x-request-id": bad})
        assert len(r.headers["x-request-id"]) == 32, bad


async def test_a_500_names_its_request_in_the_answer_and_the_log(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(make_settings(dsn))

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as api:
            capsys.readouterr()
            r = await api.get("/broken", headers={"x-request-id": "report-42"})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error (request report-42)"}
    assert r.headers["x-request-id"] == "report-42"
    out = capsys.readouterr().out
    assert "unhandled_error" in out and "report-42" in out and "a bug" in out


async def test_a_conflict_that_persists_is_a_503_to_retry(dsn: str) -> None:
    """A deadlock or serialization failure still there after ``db.in_transaction``'s runs
    is the database being busy, not a bug: 503 with Retry-After, as when it is away."""
    app = create_app(make_settings(dsn))

    async def contended() -> None:
        raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")

    app.add_api_route("/contended", contended)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as api:
            r = await api.get("/contended")
    assert r.status_code == 503, r.text
    assert "conflicting concurrent writes" in r.json()["detail"]
    assert int(r.headers["retry-after"]) > 0


async def test_unknown_ids_are_404(api: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    for r in (
        await api.get(f"/v1/events/{missing}"),
        await api.delete(f"/v1/events/{missing}"),
        await api.patch(f"/v1/events/{missing}/metadata", json={"metadata": {}}),
        await api.get(f"/v1/jobs/{missing}"),
        await api.post(f"/v1/jobs/{missing}/cancel"),
        await api.post(f"/v1/jobs/{missing}/retry"),
    ):
        assert r.status_code == 404, r.text
        assert str(missing) in r.json()["detail"]
    assert (await api.get("/v1/events/not-a-uuid")).status_code == 422


async def test_jobs_list_pages_newest_first(api: httpx.AsyncClient) -> None:
    ids = []
    for i in range(5):
        r = await api.post("/v1/events", json={"content": {"text": f"n{i}"}})
        ids.append(r.json()["job_id"])
    seen: list[str] = []
    cursor = ""  # an empty cursor is the first page
    while True:
        page = (await api.get("/v1/jobs", params={"limit": 2, "cursor": cursor})).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    assert (await api.get("/v1/jobs", params={"status": "succeeded"})).json()["jobs"] == []
    assert (await api.get("/v1/jobs", params={"status": "bogus"})).status_code == 422
    assert (await api.get("/v1/jobs", params={"cursor": "###"})).status_code == 422


async def test_cancel_and_conflicts(api: httpx.AsyncClient, dsn: str) -> None:
    r = await api.post("/v1/events", json={"content": {"text": "to cancel"}})
    job_id = r.json()["job_id"]
    assert (await api.post(f"/v1/jobs/{job_id}/retry")).status_code == 409
    assert (await api.post(f"/v1/jobs/{job_id}/cancel")).json()["status"] == "cancelled"
    assert (await api.post(f"/v1/jobs/{job_id}/cancel")).status_code == 409
    await drain(dsn)
    r = await api.post(f"/v1/jobs/{job_id}/retry")
    assert r.status_code == 200 and r.json()["requeued"] == 1
    assert r.json()["status"] == "queued"  # none of its items is settled yet
    await drain(dsn)
    assert (await api.get(f"/v1/jobs/{job_id}")).json()["status"] == "succeeded"


async def test_text_search_without_embedder_is_503(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/search", params={"q": "anything"})
    assert r.status_code == 503 and "no live embedder" in r.json()["detail"]
    assert r.headers["retry-after"]


async def test_text_search_through_the_embedder(dsn: str) -> None:
    """The API asks a running embedder for the query vector through the database."""
    from mnemo_core import db

    settings = make_settings(dsn)
    pool = await db.create_pool(dsn, application_name="test-embedder")
    worker = EmbedWorker(pool, HashModel(384), settings, worker_id="live")
    task = asyncio.create_task(worker.run())
    try:
        async for api in client_for(settings):
            notes = ["the cat sat on the mat", "quarterly revenue grew", "rust borrow checker"]
            r = await api.post(
                "/v1/events/batch",
                json={
                    "events": [
                        {"content": {"text": t}, "metadata": {"n": i % 2}}
                        for i, t in enumerate(notes)
                    ]
                },
            )
            job_id = r.json()["job_id"]

            async def succeeded(c: httpx.AsyncClient = api, job: str = job_id) -> bool:
                return (await c.get(f"/v1/jobs/{job}")).json()["status"] == "succeeded"

            await wait_for(succeeded, timeout=20, what="the batch to be embedded")
            r = await api.get("/v1/search", params={"q": "revenue grew this quarter", "limit": 3})
            assert r.status_code == 200, r.text
            assert r.json()["results"][0]["content"]["text"] == "quarterly revenue grew"
            r = await api.get(
                "/v1/search", params={"q": "revenue", "filter_metadata": '{"n": 0}', "limit": 3}
            )
            assert {x["content"]["text"] for x in r.json()["results"]} == {
                "the cat sat on the mat",
                "rust borrow checker",
            }
            r = await api.get(
                "/v1/search", params={"q": "revenue", "ts_end": "2000-01-01T00:00:00Z"}
            )
            assert r.json()["results"] == []
            r = await api.get("/v1/search", params={"q": "x", "filter_metadata": "[1]"})
            assert r.status_code == 422 and "filter_metadata" in r.json()["detail"]
            queues = {q["queue"]: q for q in (await api.get("/v1/queues")).json()["queues"]}
            assert queues["embed"]["dead_letters"] == 0 and "embed_query" in queues
            workers = (await api.get("/v1/workers")).json()["workers"]
            assert [w["alive"] for w in workers if w["id"] == "live"] == [True]
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await pool.close()


async def test_utf16_and_utf32_bodies_are_read(api: httpx.AsyncClient) -> None:
    """As the README says: json.loads tells them apart by their first bytes (RFC 4627)."""
    for codec in ("utf-16-le", "utf-16-be", "utf-32-le"):
        content = json.dumps({"content": {"text": "grüße"}}).encode(codec)
        r = await api.post(
            "/v1/events", content=content, headers={"content-type": "application/json"}
        )
        assert r.status_code == 202, (codec, r.text)
        event = (await api.get(f"/v1/events/{r.json()['event_id']}")).json()
        assert event["content"] == {"text": "grüße"}
