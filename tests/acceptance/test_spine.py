"""The spine end to end: mnemo-api and mnemo-embedder as real processes, the real
all-MiniLM-L6-v2 model, HTTP like a user, the database checked for the final state."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from mnemo_core.localpg import free_port
from tests.helpers import BIN, Proc, service_env, wait_for_sync, wait_ready

pytestmark = [pytest.mark.acceptance, pytest.mark.model]

TOPICS = [
    "sourdough bread needs a long cold fermentation",
    "the quarterly tax filing is due next Tuesday",
    "replace the bike's rear brake pads",
    "Kubernetes pod keeps crashing with OOMKilled",
    "grandma's birthday dinner on Sunday at seven",
    "the PostgreSQL vacuum settings for a hot queue table",
    "book flights to Lisbon for the conference",
    "water the tomato plants every morning in July",
    "refactor the payment service to use idempotency keys",
    "the cat needs her rabies vaccine this month",
]


def notes() -> list[str]:
    """50 distinct notes: each topic in five phrasings with distinct details."""
    details = ["urgent", "low priority", "from the team meeting", "personal", "follow-up"]
    return [
        f"{t} ({d}, item {i * 5 + j})" for i, t in enumerate(TOPICS) for j, d in enumerate(details)
    ]


@pytest.fixture(scope="module")
def stack(module_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    logs = tmp_path_factory.mktemp("logs")
    port = free_port()
    env = service_env(
        MNEMO_DATABASE_URL=module_dsn,
        MNEMO_API_PORT=str(port),
        MNEMO_VISIBILITY_TIMEOUT_S="5",
        MNEMO_TORCH_THREADS="2",
        MNEMO_HEARTBEAT_S="1",
    )
    url = f"http://127.0.0.1:{port}"
    api = Proc("api", ["mnemo-api"], env, logs).start()
    embedder = Proc("embedder-1", ["mnemo-embedder"], env, logs).start()
    wait_ready(url, api)
    state = {"url": url, "env": env, "logs": logs, "api": api, "embedders": [embedder]}
    yield state
    for p in [api, *state["embedders"]]:
        p.stop()


def db_rows(dsn: str, sql: str) -> list[asyncpg.Record]:
    async def q() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(q())


def wait_jobs(url: str, job_ids: list[str], timeout: float = 120.0) -> list[dict]:
    def all_done() -> list[dict] | None:
        jobs = [httpx.get(f"{url}/v1/jobs/{j}").json() for j in job_ids]
        if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs):
            return jobs
        return None

    return wait_for_sync(all_done, timeout=timeout, interval=0.3, what="jobs to finish")


def test_fifty_events_are_embedded_and_found_by_their_text(stack: dict, module_dsn: str) -> None:
    url = stack["url"]
    texts = notes()
    job_ids, ids_by_text = [], {}
    for t in texts[:25]:
        r = httpx.post(
            f"{url}/v1/events", json={"content": {"text": t}, "metadata": {"src": "one"}}
        )
        assert r.status_code == 202, r.text
        job_ids.append(r.json()["job_id"])
        ids_by_text[t] = r.json()["event_id"]
    batch = {"events": [{"content": {"text": t}, "metadata": {"src": "batch"}} for t in texts[25:]]}
    key = {"Idempotency-Key": "spine-batch-1"}
    r = httpx.post(f"{url}/v1/events/batch", json=batch, headers=key)
    assert r.status_code == 202, r.text
    # A client's retry with the same key (its answer lost, say) stores nothing more.
    again = httpx.post(f"{url}/v1/events/batch", json=batch, headers=key)
    assert again.json() == r.json() and again.headers["idempotent-replayed"] == "true"
    job_ids.append(r.json()["job_id"])
    ids_by_text.update(zip(texts[25:], r.json()["event_ids"], strict=True))

    jobs = wait_jobs(url, job_ids)
    assert [j["status"] for j in jobs] == ["succeeded"] * len(jobs)
    rows = db_rows(module_dsn, "SELECT embedding_status, embedding_model FROM events")
    assert len(rows) == 50
    assert {(r["embedding_status"], r["embedding_model"]) for r in rows} == {
        ("done", "all-MiniLM-L6-v2")
    }

    misses = []
    for t in texts:
        r = httpx.get(f"{url}/v1/search", params={"q": t, "limit": 1}, timeout=30)
        assert r.status_code == 200, r.text
        if r.json()["results"][0]["id"] != ids_by_text[t]:
            misses.append(t)
    assert misses == []

    # Meaning, not words: a paraphrase finds its topic.
    r = httpx.get(
        f"{url}/v1/search",
        params={
            "q": "my container runs out of memory and restarts",
            "limit": 5,
            "filter_metadata": json.dumps({"src": "one"}),
        },
    )
    top = r.json()["results"]
    assert top and all(x["metadata"] == {"src": "one"} for x in top)
    assert "Kubernetes" in top[0]["content"]["text"]


def test_embedder_prints_only_json_lines_naming_its_work(stack: dict) -> None:
    """The real model's embedder in JSON mode: every line it printed (model loading and its
    libraries included) is one JSON object carrying its worker id; a batch's lines carry
    the messages and jobs in hand."""
    url = stack["url"]
    r = httpx.post(
        f"{url}/v1/events/batch",
        json={"events": [{"content": {"text": f"log check {i}"}} for i in range(10)]},
    )
    job_id = r.json()["job_id"]
    assert wait_jobs(url, [job_id])[0]["status"] == "succeeded"
    assert httpx.get(f"{url}/v1/search", params={"q": "log check"}).status_code == 200
    embedder = stack["embedders"][-1]
    lines = [json.loads(line) for line in embedder.log().splitlines()]
    assert all(isinstance(o, dict) and o["service"] == "embedder" for o in lines)
    (started,) = [o for o in lines if o["event"] == "worker_started"]
    worker_id = started["worker_id"]
    assert {o.get("worker_id") for o in lines} == {worker_id}
    events = {o["event"] for o in lines}
    assert {"model_loaded", "worker_started"} <= events
    ours = [o for o in lines if o["event"] == "batch_embedded" and job_id in o["job_ids"]]
    assert ours and all(o["msg_ids"] and o["queue"] == "embed" for o in ours)


def test_cli_adds_watches_and_searches(stack: dict) -> None:
    env = {**stack["env"], "MNEMO_URL": stack["url"]}
    mnemo = str(BIN / "mnemo")
    out = subprocess.run(
        [
            mnemo,
            "--json",
            "events",
            "add",
            "the spare house key is under the blue flowerpot",
            "--meta",
            "room=garden",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    job_id = json.loads(out.stdout)["job_id"]
    out = subprocess.run(
        [mnemo, "jobs", "show", job_id, "--watch", "--json"],  # --json on either side
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout)["status"] == "succeeded"
    out = subprocess.run(
        [mnemo, "search", "where did I hide the key", "--limit", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "flowerpot" in out.stdout
    out = subprocess.run(
        [mnemo, "events", "list", "--filter", "room=garden", "--status", "done"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and "flowerpot" in lines[0] and " done " in lines[0]
    out = subprocess.run(
        [mnemo, "queues"], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    assert "embed_query" in out.stdout and "dead" in out.stdout
    out = subprocess.run(
        [mnemo, "jobs", "show", "00000000-0000-0000-0000-000000000000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and "404" in out.stderr


def test_malformed_message_is_dead_lettered_and_queue_keeps_flowing(
    stack: dict, module_dsn: str
) -> None:
    db_rows(module_dsn, """SELECT pgmq.send('embed', '{"garbage": true}'::jsonb)""")
    url = stack["url"]
    r = httpx.post(f"{url}/v1/events", json={"content": {"text": "after the garbage"}})
    assert wait_jobs(url, [r.json()["job_id"]])[0]["status"] == "succeeded"
    dead = db_rows(module_dsn, "SELECT message FROM pgmq.q_embed_dlq")
    assert [json.loads(d["message"])["message"] for d in dead] == [{"garbage": True}]

    def dead_letters_shown() -> bool:  # queue figures are cached for a couple of seconds
        queues = {q["queue"]: q for q in httpx.get(f"{url}/v1/queues").json()["queues"]}
        return queues["embed"]["dead_letters"] == 1

    wait_for_sync(dead_letters_shown, timeout=10, what="the dead letter in /v1/queues")


def test_sigkill_mid_batch_loses_and_duplicates_nothing(stack: dict, module_dsn: str) -> None:
    url = stack["url"]
    events = [
        {"content": {"text": f"log line {i}: disk usage at {i % 97}% on host-{i % 13}"}}
        for i in range(1000)
    ]
    r = httpx.post(f"{url}/v1/events/batch", json={"events": events}, timeout=30)
    job_id = r.json()["job_id"]
    victim = stack["embedders"][0]

    def progressing() -> bool:
        p = httpx.get(f"{url}/v1/jobs/{job_id}").json()["progress"]
        return 0 < p["done"] < p["total"]

    wait_for_sync(progressing, timeout=60, interval=0.05, what="the batch to be under way")
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    before = httpx.get(f"{url}/v1/jobs/{job_id}").json()
    assert before["status"] == "running" and before["progress"]["done"] < 1000

    replacement = Proc("embedder-2", ["mnemo-embedder"], stack["env"], stack["logs"]).start()
    stack["embedders"].append(replacement)
    job = wait_jobs(url, [job_id], timeout=180)[0]
    assert job["status"] == "succeeded"
    assert job["progress"] == {"total": 1000, "done": 1000, "failed": 0}
    rows = db_rows(
        module_dsn,
        f"SELECT embedding_status, count(*) AS n, count(embedding) AS vecs FROM events"
        f" WHERE job_id = '{job_id}' GROUP BY 1",
    )
    assert [(r["embedding_status"], r["n"], r["vecs"]) for r in rows] == [("done", 1000, 1000)]
    assert db_rows(module_dsn, "SELECT count(*) AS n FROM pgmq.q_embed")[0]["n"] == 0
    # Redelivered messages were seen again (read_ct > 1) but counted once.
    assert job["attempts"] >= 1


def test_sigterm_stops_gracefully(stack: dict) -> None:
    worker = stack["embedders"][-1]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert "worker_stopped" in worker.log()
    assert isinstance(Path(worker.log_path), Path)
