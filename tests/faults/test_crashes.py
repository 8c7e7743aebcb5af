"""Crashes, redelivery, backlogs, cancel/retry — each asserts the final database state."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sysconfig
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest

from mnemo_embedder.model import POISON_MARKER
from mnemo_indexer.chunking import ParseError, parse_file
from tests.faults.conftest import SOAK, Stack, size, timer
from tests.helpers import Proc, tar_gz_of, wait_for_sync

pytestmark = pytest.mark.fault

IN_FLIGHT_SQL = (
    "SELECT coalesce(sum(jsonb_array_length(message->'ids')), 0)::int FROM pgmq.q_{q}"
    " WHERE vt > now()"
)


def kill_group(p: Proc) -> None:
    """SIGKILL the process and its children (a container kill), then reap it."""
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(30)


def event_state(s: Stack) -> dict[str, int]:
    rows = s.sql(
        "SELECT embedding_status, count(*)::int AS n, count(embedding)::int AS v"
        " FROM events GROUP BY 1"
    )
    return {r["embedding_status"]: r["n"] for r in rows} | {"vectors": sum(r["v"] for r in rows)}


def test_embedder_killed_mid_batch_repeatedly(stack_factory: Any, fault_report: list) -> None:
    """SIGKILL the embedder again and again during an ingest: every event is embedded
    exactly once and every job succeeds."""
    n, kills = size(1500, 4000), size(2, 5)
    s: Stack = stack_factory(MNEMO_VISIBILITY_TIMEOUT_S="4")
    s.start_api()
    job_ids = s.post_batches(n, "crash")
    worker = s.start("mnemo-embedder")
    in_flight: list[int] = []
    recover: list[float] = []
    done_sql = "SELECT count(*) FROM events WHERE embedding_status = 'done'"
    for _ in range(kills):
        before = s.one(done_sql)
        wait_for_sync(
            lambda b=before: s.one(done_sql) >= min(b + 40, n),
            timeout=180,
            interval=0.05,
            what="progress before the kill",
        )
        if s.one(done_sql) == n:
            break  # finished before the next kill: fewer injections, recorded below
        in_flight.append(s.one(IN_FLIGHT_SQL.format(q="embed")))
        kill_group(worker)
        after_kill = s.one("SELECT count(*) FROM events WHERE embedding_status = 'done'")
        clock = timer()
        worker = s.start("mnemo-embedder")
        wait_for_sync(
            lambda a=after_kill: (
                s.one("SELECT count(*) FROM events WHERE embedding_status = 'done'") > a
            ),
            timeout=180,
            interval=0.1,
            what="progress after the restart",
        )
        recover.append(clock())
    jobs = s.wait_jobs(job_ids, timeout=600)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert sum(j["progress"]["done"] for j in jobs) == n  # counted once each
    assert sum(j["progress"]["total"] for j in jobs) == n
    state = event_state(s)
    assert state == {"done": n, "vectors": n}
    assert s.one("SELECT count(*) FROM pgmq.q_embed") == 0
    assert s.one("SELECT count(*) FROM pgmq.q_embed_dlq") == 0
    assert max(j["attempts"] for j in jobs) >= 2  # some messages really were redelivered
    assert in_flight, "no kill landed mid-ingest"
    fault_report.append(
        {
            "fault": "embedder SIGKILL mid-batch",
            "injected": len(in_flight),
            "items": n,
            "in_flight": in_flight,
            "lost": n - state["done"],
            "duplicates": sum(j["progress"]["done"] for j in jobs) - n,
            "recovery_s": recover,
        }
    )


def stdlib_tarball(packages: list[str]) -> tuple[bytes, dict[str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files: dict[str, str] = {}
    for pkg in packages:
        for p in sorted((root / pkg).rglob("*.py")):
            if "test" in p.relative_to(root).parts[1:-1] or p.stat().st_size > 1_000_000:
                continue
            files[p.relative_to(root).as_posix()] = p.read_text(encoding="utf-8")
    return tar_gz_of(files), files


def test_indexer_killed_during_a_repository_index(stack_factory: Any, fault_report: list) -> None:
    """SIGKILL the indexer (and its parser processes) while it indexes a real codebase:
    after a restart every file is indexed once, chunks and edges are not duplicated, and
    the job succeeds."""
    packages = [
        "email",
        "json",
        "http",
        "xml",
        "logging",
        "urllib",
        "importlib",
        "concurrent",
        "asyncio",
    ]
    if SOAK:
        packages += [
            "multiprocessing",
            "unittest",
            "encodings",
            "tomllib",
            "sqlite3",
            "wsgiref",
            "xmlrpc",
            "html",
            "collections",
            "ctypes",
            "curses",
        ]
    data, files = stdlib_tarball(packages)
    expected_chunks = 0
    for path, text in files.items():
        try:
            expected_chunks += len(parse_file(path, text).chunks)
        except ParseError:
            pass
    s: Stack = stack_factory(
        MNEMO_EMBEDDING_MODEL="hash-384", MNEMO_VISIBILITY_TIMEOUT_S="3", MNEMO_INDEX_MESSAGES="1"
    )
    s.start_api()
    s.start("mnemo-embedder")
    r = httpx.post(
        f"{s.url}/v1/code/index",
        data={"repository": "stdlib"},
        files={"archive": ("stdlib.tgz", data, "application/gzip")},
        timeout=120,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    indexer = s.start("mnemo-indexer")
    total = len(files)
    kills = size(1, 3)
    in_flight, recover = [], []
    for k in range(kills):
        low = total * (k + 1) // (kills + 2)
        wait_for_sync(
            lambda lo=low: (
                lo <= s.one("SELECT count(*) FROM code_files WHERE status = 'indexed'") < total
            ),
            timeout=180,
            interval=0.02,
            what="indexing under way",
        )
        in_flight.append(s.one(IN_FLIGHT_SQL.format(q="index")))
        kill_group(indexer)
        clock = timer()
        indexer = s.start("mnemo-indexer")
        done = s.one("SELECT count(*) FROM code_files WHERE status = 'indexed'")
        wait_for_sync(
            lambda d=done: (
                s.one("SELECT count(*) FROM code_files WHERE status = 'indexed'") > d or d == total
            ),
            timeout=120,
            interval=0.1,
            what="indexing to resume",
        )
        recover.append(clock())
    [job] = s.wait_jobs([job_id], timeout=600)
    assert job["status"] == "succeeded", job
    assert s.one("SELECT count(*) FROM code_files WHERE status = 'indexed'") == total
    chunks = s.one("SELECT count(*) FROM code_chunks")
    assert chunks == expected_chunks
    assert s.one("SELECT count(DISTINCT (file_id, qualified_name)) FROM code_chunks") == chunks
    edges = s.one("SELECT count(*) FROM code_edges")
    assert (
        s.one("SELECT count(DISTINCT (file_id, source, relationship, external)) FROM code_edges")
        == edges
    )
    assert s.one("SELECT count(*) FROM code_chunks WHERE embedding_status <> 'done'") == 0
    assert job["result"]["files_indexed"] == total and job["result"]["chunks"] == chunks
    fault_report.append(
        {
            "fault": "indexer SIGKILL mid-index",
            "injected": kills,
            "items": total,
            "in_flight": in_flight,
            "lost": total - job["result"]["files_indexed"],
            "duplicates": job["result"]["chunks"] - expected_chunks,
            "recovery_s": recover,
        }
    )


def test_duplicate_delivery_leaves_one_result(stack_factory: Any, fault_report: list) -> None:
    """Visibility timeouts that expire while the work is in hand: two embedders process the
    same messages at the same time. One result per event, counted once.

    Not left to timing (a fast machine finishes a batch inside a 1 s timeout): while half
    the events are still pending, the test expires every in-flight message's visibility
    timeout again and again (what a timeout shorter than the work does), so the other
    embedder reads what this one is encoding."""
    n = size(1200, 4000)
    s: Stack = stack_factory(MNEMO_VISIBILITY_TIMEOUT_S="1", MNEMO_MAX_ATTEMPTS="50")
    s.start_api()
    job_ids = s.post_batches(n, "dup", per_batch=200)
    expired: list[int] = []
    reads: list[int] = []  # the highest delivery count in the queue, sampled
    stop = threading.Event()

    def expire_in_flight() -> None:
        async def run() -> None:
            conn = await asyncpg.connect(s.dsn)
            try:
                pending = "SELECT count(*) FROM events WHERE embedding_status = 'pending'"
                while not stop.is_set() and await conn.fetchval(pending) > n // 2:
                    try:
                        rows = await conn.fetch(
                            "UPDATE pgmq.q_embed SET vt = now() WHERE vt > now() RETURNING msg_id"
                        )
                    except asyncpg.exceptions.DeadlockDetectedError:
                        # Its rows in another order than a worker's acknowledgement: either
                        # one may be the victim (the worker runs its transaction again).
                        continue
                    expired.extend(r["msg_id"] for r in rows)
                    reads.append(
                        await conn.fetchval("SELECT coalesce(max(read_ct), 0) FROM pgmq.q_embed")
                    )
                    await asyncio.sleep(0.05)
            finally:
                await conn.close()

        asyncio.run(run())

    injector = threading.Thread(target=expire_in_flight, daemon=True)
    workers = [s.start("mnemo-embedder"), s.start("mnemo-embedder")]
    injector.start()
    try:
        jobs = s.wait_jobs(job_ids, timeout=600)
    finally:
        stop.set()
        injector.join(30)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert sum(j["progress"]["done"] for j in jobs) == n
    assert event_state(s) == {"done": n, "vectors": n}
    assert s.one("SELECT count(*) FROM pgmq.q_embed") == 0
    assert s.one("SELECT count(*) FROM pgmq.q_embed_dlq") == 0
    # The fault happened: messages were made visible in flight and delivered again.
    assert expired, "no in-flight message was expired"
    assert max(reads) >= 2, "no message was delivered twice"
    # Which messages both workers wrote a batch for (their logs): reported, not asserted.
    handled = [_msg_ids(w) for w in workers]
    redelivered = len(handled[0] & handled[1])
    fault_report.append(
        {
            "fault": "duplicate concurrent delivery (in-flight timeouts expired)",
            "injected": len(set(expired)),
            "processed_by_both": redelivered,
            "items": n,
            "in_flight": None,
            "lost": 0,
            "duplicates": sum(j["progress"]["done"] for j in jobs) - n,
            "recovery_s": None,
        }
    )


def _msg_ids(p: Proc) -> set[int]:
    ids: set[int] = set()
    for line in p.log().splitlines():
        if '"batch_embedded"' in line:
            ids.update(json.loads(line).get("msg_ids", []))
    return ids


def test_backlog_drains_with_two_embedders(stack_factory: Any, fault_report: list) -> None:
    """Events queue up with no worker running; two embedders drain the queue to zero while
    reads stay fast."""
    n = size(3000, 20000)
    env = {} if SOAK else {"MNEMO_EMBEDDING_MODEL": "hash-384"}
    s: Stack = stack_factory(**env)
    s.start_api()
    job_ids = s.post_batches(n, "backlog", per_batch=1000)
    assert s.one("SELECT count(*) FROM events WHERE embedding_status = 'pending'") == n
    clock = timer()
    s.start("mnemo-embedder")
    s.start("mnemo-embedder")
    latencies: list[float] = []
    with s.http() as c:
        while s.one("SELECT count(*) FROM events WHERE embedding_status = 'pending'") > 0:
            for path in (f"/v1/jobs/{job_ids[0]}", "/v1/jobs?limit=20", "/v1/queues"):
                t = time.perf_counter()
                assert c.get(path).status_code == 200
                latencies.append((time.perf_counter() - t) * 1000)
            assert clock() < (900 if SOAK else 300), "backlog did not drain"
    drain_s = clock()
    jobs = s.wait_jobs(job_ids)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert event_state(s) == {"done": n, "vectors": n}
    assert sum(j["progress"]["done"] for j in jobs) == n
    assert s.one("SELECT count(*) FROM pgmq.q_embed") == 0
    assert s.one("SELECT count(*) FROM pgmq.q_embed_dlq") == 0
    p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) >= 20 else max(latencies)
    assert p95 < 1000, f"read p95 {p95:.0f} ms during the drain"
    fault_report.append(
        {
            "fault": "backlog, no worker, then 2 embedders",
            "injected": 1,
            "items": n,
            "in_flight": n,
            "lost": n - event_state(s)["done"],
            "duplicates": sum(j["progress"]["done"] for j in jobs) - n,
            "recovery_s": drain_s,
            "read_p95_ms": round(p95, 1),
        }
    )


def test_cancel_stops_remaining_items(stack_factory: Any, fault_report: list) -> None:
    n = 1000  # one job: the batch limit
    s: Stack = stack_factory()
    s.start_api()
    [job_id] = s.post_batches(n, "cancel", per_batch=n)
    s.start("mnemo-embedder")
    wait_for_sync(
        lambda: s.job(job_id)["progress"]["done"] > 0, timeout=120, what="the job to start"
    )
    r = httpx.post(f"{s.url}/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    wait_for_sync(
        lambda: s.one("SELECT count(*) FROM pgmq.q_embed") == 0,
        timeout=120,
        what="the queue to empty",
    )
    job = s.job(job_id)
    state = event_state(s)
    assert job["status"] == "cancelled"
    assert state["done"] == job["progress"]["done"] < n
    assert state.get("cancelled", 0) == n - state["done"] and "pending" not in state
    r = httpx.post(f"{s.url}/v1/jobs/{job_id}/retry")
    assert r.json()["requeued"] == n - state["done"]
    [job] = s.wait_jobs([job_id], timeout=300)
    assert job["status"] == "succeeded" and job["progress"]["done"] == n
    fault_report.append(
        {
            "fault": "cancel running job, then retry",
            "injected": 1,
            "items": n,
            "in_flight": n - state["done"],
            "lost": 0,
            "duplicates": job["progress"]["done"] - n,
            "recovery_s": None,
        }
    )


def test_retry_requeues_only_failed_items(stack_factory: Any, fault_report: list) -> None:
    # Default message size: the 20 items travel in one message, the 3 bad ones among them.
    s: Stack = stack_factory(MNEMO_EMBEDDING_MODEL="hash-384", MNEMO_MAX_ATTEMPTS="2")
    s.start_api()
    texts = [f"fine {i}" for i in range(17)] + [f"poison {i} {POISON_MARKER}" for i in range(3)]
    r = httpx.post(
        f"{s.url}/v1/events/batch", json={"events": [{"content": {"text": t}} for t in texts]}
    )
    job_id = r.json()["job_id"]
    s.start("mnemo-embedder")
    [job] = s.wait_jobs([job_id], timeout=120)
    assert job["status"] == "failed"
    assert job["progress"] == {"total": 20, "done": 17, "failed": 3}
    assert len(job["failures"]) == 3 and all("poison" in f["error"] for f in job["failures"])
    # One dead letter: the message, with only its 3 bad items failed.
    assert s.one("SELECT count(*) FROM pgmq.q_embed_dlq") == 1
    done_before = {
        r["id"]: r["embedding"]
        for r in s.sql("SELECT id, embedding::text FROM events WHERE embedding_status = 'done'")
    }
    s.sql(
        "UPDATE events SET content = jsonb_build_object('text', 'repaired ' || id)"
        " WHERE embedding_status = 'failed'"
    )
    r = httpx.post(f"{s.url}/v1/jobs/{job_id}/retry")
    assert r.status_code == 200 and r.json()["requeued"] == 3
    assert r.json()["status"] == "running"  # 17 of its 20 items are done
    [job] = s.wait_jobs([job_id], timeout=120)
    assert job["status"] == "succeeded" and job["progress"] == {
        "total": 20,
        "done": 20,
        "failed": 0,
    }
    after = {
        r["id"]: r["embedding"]
        for r in s.sql(
            "SELECT id, embedding::text FROM events WHERE id = ANY($1::uuid[])", list(done_before)
        )
    }
    assert after == done_before  # the 17 good ones were not touched
    fault_report.append(
        {
            "fault": "poison items, fix, retry failed only",
            "injected": 3,
            "items": 20,
            "in_flight": 3,
            "lost": 0,
            "duplicates": job["progress"]["done"] - 20,
            "recovery_s": None,
        }
    )


def test_sigterm_finishes_the_batch_in_hand(stack_factory: Any, fault_report: list) -> None:
    """SIGTERM mid-ingest: the batch in hand is written and acknowledged within the grace
    period, unstarted messages go back at once, and no message is processed twice."""
    n = size(1000, 4000)
    s: Stack = stack_factory(MNEMO_GRACE_PERIOD_S="20", MNEMO_VISIBILITY_TIMEOUT_S="120")
    s.start_api()
    job_ids = s.post_batches(n, "graceful", per_batch=1000)
    first = s.start("mnemo-embedder")
    done_sql = "SELECT count(*) FROM events WHERE embedding_status = 'done'"
    held_sql = "SELECT msg_id, message->'ids' AS ids FROM pgmq.q_embed WHERE vt > now()"

    def under_way() -> list[Any] | None:
        if not 0 < s.one(done_sql) < n - 300:
            return None
        return s.sql(held_sql) or None  # the messages the worker holds right now

    held = wait_for_sync(under_way, timeout=180, interval=0.05, what="the ingest under way")
    held_items = [i for r in held for i in json.loads(r["ids"])]
    in_flight = len(held_items)
    at_signal = s.one(done_sql)
    clock = timer()
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    stop_s = clock()
    assert stop_s < 20 + 5
    after_stop = s.one(done_sql)
    # The batch in hand was finished, not dropped: every message the worker held when the
    # signal came is acknowledged, and every item in it is embedded.
    assert after_stop > at_signal
    held_ids = [r["msg_id"] for r in held]
    assert s.one("SELECT count(*) FROM pgmq.q_embed WHERE msg_id = ANY($1)", held_ids) == 0
    assert (
        s.one(
            "SELECT count(*) FROM events WHERE id = ANY($1::uuid[]) AND embedding_status = 'done'",
            held_items,
        )
        == in_flight
    )
    # Nothing it held stays invisible: a long visibility timeout would otherwise delay it.
    assert s.one("SELECT count(*) FROM pgmq.q_embed WHERE vt > now()") == 0
    second = s.start("mnemo-embedder")
    jobs = s.wait_jobs(job_ids, timeout=600)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert event_state(s) == {"done": n, "vectors": n}
    twice = _msg_ids(first) & _msg_ids(second)
    assert twice == set(), f"processed by both workers: {sorted(twice)[:10]}"
    fault_report.append(
        {
            "fault": "SIGTERM mid-ingest (graceful)",
            "injected": 1,
            "items": n,
            "in_flight": in_flight,
            "lost": n - event_state(s)["done"],
            "duplicates": len(twice),
            "recovery_s": stop_s,
            "done_by_stopping_worker": after_stop,
        }
    )


def _parser_processes(indexer_pid: int) -> list[psutil.Process]:
    """An indexer's parser processes: forked by pebble's forkserver (the indexer's child),
    so they are its grandchildren."""
    out = []
    for child in psutil.Process(indexer_pid).children():
        out += child.children()
    return out


async def test_parser_pool_outlives_a_parser_killed_between_files() -> None:
    """A parser process killed while it has no task (the OOM killer, an operator) broke
    pebble's whole pool for good: every later file failed, and one killed while it started
    stopped the indexer. The pool is replaced; at most the file in hand fails, as transient
    (parsed again with its message), and the next ones parse."""
    from mnemo_indexer.pool import FileFailed, ParsePool

    pool = ParsePool(1, 30)
    try:
        await pool.warm_up()
        for _ in range(2):  # the replacement pool recovers the same way
            parsers = _parser_processes(os.getpid())
            assert parsers
            for p in parsers:
                p.kill()
            psutil.wait_procs(parsers, timeout=10)
            await asyncio.sleep(0.3)  # pebble's manager thread sees the death
            failures = []
            for _ in range(2):
                try:
                    rows = await pool.parse("a.py", "def f():\n    return 1\n", "python")
                    break
                except FileFailed as exc:
                    failures.append(exc)
            else:
                raise AssertionError(f"still failing after a new pool: {failures}")
            assert rows.chunks.qualified_name == ["a.f"]
            assert all(f.transient for f in failures), failures
    finally:
        pool.close()


def test_parser_process_killed_mid_file(stack_factory: Any, fault_report: list) -> None:
    """SIGKILL the parser process while it parses a slow file: the indexer survives, the
    message comes back after its backoff, the file is parsed on the next delivery, and the
    job succeeds with every file indexed once."""
    s: Stack = stack_factory(
        MNEMO_EMBEDDING_MODEL="hash-384",
        MNEMO_MAX_FILE_BYTES=str(8 * 1024 * 1024),
        MNEMO_PARSE_PROCESSES="1",
    )
    s.start_api()
    s.start("mnemo-embedder")
    indexer = s.start("mnemo-indexer")
    # Registered: its parser process has started and parsed its warm-up line. What that
    # cost (imports; more than half a second of CPU on a slow machine) is not the slow file.
    wait_for_sync(
        lambda: s.one("SELECT count(*) FROM workers WHERE kind = 'indexer'"),
        timeout=60,
        what="the indexer registered",
    )
    idle_cpu = {p.pid: p.cpu_times().user for p in _parser_processes(indexer.pid)}
    slow = "x = [" + "1, " * 900_000 + "]\n"  # a few seconds of parsing, one chunk
    files = [{"path": "slow.py", "content": slow}] + [
        {"path": f"m{i}.py", "content": f"def f{i}():\n    return {i}\n"} for i in range(10)
    ]
    r = httpx.post(f"{s.url}/v1/code/index", json={"repository": "r", "files": files}, timeout=60)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]

    def busy_parser() -> psutil.Process | None:
        for p in _parser_processes(indexer.pid):
            try:
                if p.cpu_times().user - idle_cpu.get(p.pid, 0.0) > 0.5:
                    return p
            except psutil.NoSuchProcess:
                pass
        return None

    parser = wait_for_sync(
        busy_parser, timeout=60, interval=0.05, what="the parser busy with the slow file"
    )
    clock = timer()
    parser.kill()
    [job] = s.wait_jobs([job_id], timeout=180)
    assert job["status"] == "succeeded", job
    assert job["result"]["files_failed"] == []
    assert job["attempts"] >= 2  # the message was delivered again after the crash
    assert indexer.proc is not None and indexer.proc.poll() is None  # the indexer lived on
    assert s.one("SELECT count(*) FROM code_files WHERE status = 'indexed'") == 11
    assert s.one("SELECT count(*) FROM code_chunks") == s.one(
        "SELECT count(DISTINCT (file_id, qualified_name)) FROM code_chunks"
    )
    assert s.one("SELECT count(*) FROM pgmq.q_index") == 0
    assert s.one("SELECT count(*) FROM pgmq.q_index_dlq") == 0
    fault_report.append(
        {
            "fault": "parser process SIGKILL mid-file",
            "injected": 1,
            "items": 11,
            "in_flight": 11,
            "lost": 11 - s.one("SELECT count(*) FROM code_files WHERE status = 'indexed'"),
            "duplicates": 0,
            "recovery_s": clock(),
        }
    )
