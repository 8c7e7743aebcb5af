"""Poison messages: each kind ends in its dead-letter queue (at once when it can never be
understood, after the configured attempts when processing it fails), its job shows the
failed item, the rest of the queue keeps flowing, and `mnemo dlq replay` re-runs them once
the cause is fixed."""

from __future__ import annotations

import json
import subprocess
import uuid
import warnings
from typing import Any

import httpx
import pytest

from mnemo_embedder.model import POISON_MARKER
from tests.faults.conftest import Stack
from tests.helpers import BIN, wait_for_sync

pytestmark = pytest.mark.fault


def send_with_pgmq_client(dsn: str, body: dict[str, Any]) -> None:
    """Another PGMQ client (the `pgmq` package's own, over psycopg) writes to our queue."""
    from pgmq import PGMQueue

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = PGMQueue(conn_string=dsn, init_extension=False, pool_size=1)
        try:
            q.send("embed", body)
        finally:
            q.pool.close()


def mnemo(s: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mnemo"), "--url", s.url, *args],
        env=s.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_poison_messages_dead_letter_and_replay(stack_factory: Any, fault_report: list) -> None:
    s: Stack = stack_factory(
        MNEMO_EMBEDDING_MODEL="hash-384",
        MNEMO_MAX_ATTEMPTS="2",
        MNEMO_PARSE_TIMEOUT_S="0.3",
        MNEMO_MAX_FILE_BYTES=str(4 * 1024 * 1024),
        MNEMO_VISIBILITY_TIMEOUT_S="5",
    )
    s.start_api()
    embedder = s.start("mnemo-embedder")
    indexer = s.start("mnemo-indexer")
    # 1-3: can never be understood -> embed_dlq at once.
    s.sql('SELECT pgmq.send(\'embed\', to_jsonb(\'{"kind": "event", "ids": [oops\'::text))')
    s.sql(
        "SELECT pgmq.send('embed', $1::jsonb)",
        json.dumps({"kind": "event", "ids": [str(uuid.uuid4())]}),
    )
    send_with_pgmq_client(s.dsn, {"task": "resize", "image": "cat.png"})
    # 4: an item whose text makes the model raise -> retried, then embed_dlq.
    with httpx.Client(base_url=s.url) as c:
        bad = c.post("/v1/events", json={"content": {"text": f"bad {POISON_MARKER}"}}).json()
        # 5: a source file the parser cannot finish in time -> retried, then index_dlq.
        huge = "x = [" + "1, " * 300_000 + "]\n"  # ~1 s to parse, one chunk
        idx = c.post(
            "/v1/code/index",
            json={
                "repository": "r",
                "files": [
                    {"path": "huge.py", "content": huge},
                    {"path": "ok.py", "content": "def ok():\n    return 1\n"},
                ],
            },
        ).json()
        # The rest keeps flowing.
        good = [
            c.post("/v1/events", json={"content": {"text": f"fine {i}"}}).json()["job_id"]
            for i in range(20)
        ]
    assert {j["status"] for j in s.wait_jobs(good, timeout=120)} == {"succeeded"}
    [bad_job, idx_job] = s.wait_jobs([bad["job_id"], idx["job_id"]], timeout=180)
    assert bad_job["status"] == "failed" and bad_job["progress"]["failed"] == 1
    assert bad_job["failures"][0]["item_id"] == bad["event_id"]
    assert "poison marker" in bad_job["error"]
    assert idx_job["status"] == "failed"
    assert [f["path"] for f in idx_job["result"]["files_failed"]] == ["huge.py"]
    wait_for_sync(
        lambda: s.one("SELECT count(*) FROM pgmq.q_embed_dlq") == 4,
        timeout=60,
        what="four dead letters in embed_dlq",
    )
    assert s.one("SELECT count(*) FROM pgmq.q_index_dlq") == 1
    listed = json.loads(mnemo(s, "--json", "dlq", "list", "embed").stdout)
    errors = " | ".join(m["error"] for m in listed["messages"])
    assert "poison message" in errors and "poison marker" in errors
    assert s.one("SELECT count(*) FROM pgmq.q_embed") == 0

    # Fix the causes: repair the text; give the parser enough time (a restarted indexer).
    s.sql(
        'UPDATE events SET content = \'{"text": "repaired"}\' WHERE id = $1::uuid', bad["event_id"]
    )
    indexer.stop()
    s.start("mnemo-indexer", MNEMO_PARSE_TIMEOUT_S="60")
    out = mnemo(s, "dlq", "replay", "embed")
    assert out.returncode == 0, out.stderr
    out = mnemo(s, "dlq", "replay", "index")
    assert out.returncode == 0, out.stderr
    [bad_job, idx_job] = s.wait_jobs([bad["job_id"], idx["job_id"]], timeout=300)
    assert bad_job["status"] == "succeeded" and bad_job["progress"]["failed"] == 0
    assert idx_job["status"] == "succeeded" and idx_job["result"]["files_failed"] == []
    # The three that can never work came straight back to the dead-letter queue.
    wait_for_sync(
        lambda: s.one("SELECT count(*) FROM pgmq.q_embed_dlq") == 3,
        timeout=60,
        what="the hopeless three back in embed_dlq",
    )
    assert embedder.proc is not None and embedder.proc.poll() is None
    fault_report.append(
        {
            "fault": "poison messages (5 kinds) + replay",
            "injected": 5,
            "items": 22,
            "in_flight": None,
            "lost": 0,
            "duplicates": 0,
            "recovery_s": None,
        }
    )
