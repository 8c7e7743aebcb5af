"""The answers of the event, search and job routes are what the OpenAPI document says
(mnemo_api.answers, no field more or less), in every state they can be in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from pydantic import BaseModel

from mnemo_api.answers import (
    CallPath,
    CodeResults,
    Event,
    EventPage,
    Health,
    IndexAccepted,
    Job,
    JobPage,
    Queues,
    Ready,
    Repositories,
    RetriedJob,
    SearchResults,
    SymbolAnswer,
    Traversal,
    Workers,
)
from mnemo_core import db
from mnemo_embedder.model import POISON_MARKER, HashModel
from mnemo_embedder.worker import EmbedWorker
from tests.helpers import DIM, tar_gz_of
from tests.integration.test_api import client_for, make_settings


@pytest.fixture
async def api(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(make_settings(dsn)):
        yield c


async def drain(dsn: str, rounds: int = 1) -> None:
    """Embed what is queued; each round makes messages that are back for a retry visible."""
    pool = await db.create_pool(dsn, application_name="test-drain")
    try:
        for _ in range(rounds):
            await pool.execute("UPDATE pgmq.q_embed SET vt = now()")
            w = EmbedWorker(
                pool, HashModel(DIM), make_settings(dsn, max_attempts=2), worker_id="d", once=True
            )
            await asyncio.wait_for(w.run(), 30)
    finally:
        await pool.close()


def conforms(model: type[BaseModel], r: httpx.Response) -> dict:
    assert r.status_code == 200, r.text
    model.model_validate(r.json())  # extra="forbid": an undocumented field fails here
    return r.json()


async def test_event_and_search_answers(api: httpx.AsyncClient, dsn: str) -> None:
    bodies = [
        {"content": {"text": "oat milk"}, "metadata": {"k": 1}},
        {"content": {"text": f"bad {POISON_MARKER}"}},
        {"content": {"n": 1}},  # nothing to embed: skipped
        {"content": {"text": "own"}, "embedding": [0.5] * DIM},  # stored: done, no job
    ]
    ids = [(await api.post("/v1/events", json=b)).json()["event_id"] for b in bodies]
    pending = conforms(Event, await api.get(f"/v1/events/{ids[0]}"))
    assert pending["embedding_status"] == "pending"
    await drain(dsn, rounds=3)
    states = [conforms(Event, await api.get(f"/v1/events/{i}")) for i in ids]
    assert [s["embedding_status"] for s in states] == ["done", "failed", "skipped", "done"]
    assert states[1]["embedding_error"] and states[3]["job_id"] is None
    conforms(Event, await api.patch(f"/v1/events/{ids[0]}/metadata", json={"remove": ["k"]}))
    page = conforms(EventPage, await api.get("/v1/events", params={"limit": 2}))
    assert page["next_cursor"]
    conforms(EventPage, await api.get("/v1/events", params={"cursor": page["next_cursor"]}))
    # By vector: a text search needs a live embedder (the acceptance tests have one).
    found = conforms(SearchResults, await api.post("/v1/search", json={"vector": [0.5] * DIM}))
    assert found["count"] == 2
    conforms(SearchResults, await api.post("/v1/search", json={"vector": [-1.0] * DIM, "limit": 1}))


async def test_job_answers(api: httpx.AsyncClient, dsn: str) -> None:
    bad = (await api.post("/v1/events", json={"content": {"text": POISON_MARKER}})).json()
    await drain(dsn, rounds=3)
    failed = conforms(Job, await api.get(f"/v1/jobs/{bad['job_id']}"))
    assert failed["status"] == "failed" and failed["failures"]
    retried = conforms(RetriedJob, await api.post(f"/v1/jobs/{bad['job_id']}/retry"))
    assert retried["requeued"] == 1
    queued = (await api.post("/v1/events", json={"content": {"text": "later"}})).json()
    conforms(Job, await api.get(f"/v1/jobs/{queued['job_id']}"))
    cancelled = conforms(Job, await api.post(f"/v1/jobs/{queued['job_id']}/cancel"))
    assert cancelled["status"] == "cancelled"
    r = await api.post(
        "/v1/code/index",
        json={"repository": "shop", "files": [{"path": "a.py", "content": "def f():\n    pass\n"}]},
    )
    index_job = conforms(Job, await api.get(f"/v1/jobs/{r.json()['job_id']}"))
    assert index_job["detail"]["files"]["total"] == 1
    jobs = conforms(JobPage, await api.get("/v1/jobs", params={"limit": 2}))
    assert len(jobs["jobs"]) == 2 and jobs["next_cursor"]


async def test_the_document_names_them(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    spec = (await api.get("/openapi.json")).json()

    def ref(path: str, method: str) -> str:
        schema = spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]
        return str(schema["schema"]["$ref"]).rsplit("/", 1)[-1]

    assert ref("/v1/events", "get") == "EventPage"
    assert ref("/v1/events/{event_id}", "get") == "Event"
    assert ref("/v1/search", "post") == "SearchResults"
    assert ref("/v1/jobs/{job_id}", "get") == "Job"
    assert ref("/v1/jobs/{job_id}/retry", "post") == "RetriedJob"
    assert spec["components"]["schemas"]["Event"]["additionalProperties"] is False


async def test_code_answers(dsn: str) -> None:
    from tests.integration.test_code_api import drain as index_and_embed
    from tests.integration.test_code_api import files_json
    from tests.integration.test_indexer import FILES

    async for api in client_for(make_settings(dsn)):
        r = await api.post(
            "/v1/code/index", json={"repository": "shop", "files": files_json(FILES)}
        )
        assert r.status_code == 202, r.text
        IndexAccepted.model_validate(r.json())
        archive = await api.post(
            "/v1/code/index",
            data={"repository": "shop"},
            files={"archive": ("a.tgz", tar_gz_of({"b.py": "x = 1\n", "bin": "\x00"}), "x")},
        )
        assert archive.status_code == 202 and archive.json()["skipped"], archive.text
        IndexAccepted.model_validate(archive.json())
        await index_and_embed(dsn)
        job = conforms(Job, await api.get(f"/v1/jobs/{r.json()['job_id']}"))
        assert job["result"] and job["detail"]
        for mode in ("hybrid", "lexical"):  # vector search needs a live embedder
            hits = conforms(
                CodeResults, await api.get("/v1/code/search", params={"q": "total", "mode": mode})
            )
            assert hits["results"]
        hits = conforms(CodeResults, await api.post("/v1/code/search", json={"q": "discount"}))
        assert hits["notes"]  # hybrid without an embedder: lexical only, said so
        caller = "shop.pricing.total"
        sym = conforms(SymbolAnswer, await api.get(f"/v1/code/graph/shop/symbols/{caller}"))
        assert sym["callees"]
        walk = conforms(
            Traversal,
            await api.post(
                "/v1/code/graph/traverse",
                json={"repository": "shop", "start": caller, "direction": "both"},
            ),
        )
        assert walk["edges"]
        target = next(e["to"] for e in walk["edges"] if e["resolved"] and e["from"] == caller)
        found = conforms(
            CallPath,
            await api.get("/v1/code/graph/shop/path", params={"from": caller, "to": target}),
        )
        assert found["hops"] == 1
        none = conforms(
            CallPath,
            await api.get("/v1/code/graph/shop/path", params={"from": target, "to": caller}),
        )
        assert none["path"] is None and none["hops"] is None
        repos = conforms(Repositories, await api.get("/v1/code/repositories"))
        assert repos["repositories"][0]["languages"]


async def test_operations_answers(api: httpx.AsyncClient) -> None:
    conforms(Health, await api.get("/health"))
    conforms(Ready, await api.get("/ready"))
    await api.post("/v1/events", json={"content": {"text": "something to count"}})
    queues = conforms(Queues, await api.get("/v1/queues"))
    assert {q["queue"] for q in queues["queues"]} >= {"embed", "index"}
    conforms(Workers, await api.get("/v1/workers"))


@pytest.mark.parametrize(
    ("schema", "body", "valid"),
    [
        ("mnemo_api__schemas__SearchIn", {"q": "x"}, True),
        ("mnemo_api__schemas__SearchIn", {"vector": [1.0], "limit": 3}, True),
        ("mnemo_api__schemas__SearchIn", {"q": "x", "vector": None}, True),
        ("mnemo_api__schemas__SearchIn", {}, False),
        ("mnemo_api__schemas__SearchIn", {"q": "x", "vector": [1.0]}, False),
        ("MetadataPatch", {}, False),
        ("MetadataPatch", {"remove": ["k"]}, True),
    ],
)
async def test_the_request_schemas_say_what_the_routes_take(
    api: httpx.AsyncClient, schema: str, body: dict, valid: bool
) -> None:
    """A body the document calls valid is not refused for a rule it does not state (exactly
    one of q and vector; something to patch), as schemathesis found."""
    import jsonschema_rs

    spec = (await api.get("/openapi.json")).json()
    validator = jsonschema_rs.validator_for(
        {**spec["components"]["schemas"][schema], "components": spec["components"]}
    )
    assert validator.is_valid(body) is valid
