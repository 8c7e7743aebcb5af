"""The load generator, run as its own process so its CPU is not the API's or the harness's.

A minimal HTTP/1.1 keep-alive client over asyncio streams (request bytes built before the
clock starts; a response is its status line, headers and Content-Length body), and the
raw-database baseline for ingest.

    python -m bench.mnemobench.loadgen SPEC.json      # prints one JSON object

SPEC modes:
- ``http``: ``concurrency`` connections POST ``bodies`` (cycled) to ``path`` for ``seconds``
  after ``warmup_s``; counts answers with an expected status, and ``items`` per request.
- ``latency``: one connection sends ``bodies`` one after the other; per-request latency and
  the ids of the results (``results[].id``) for recall.
- ``latency_during``: the same, cycling ``bodies`` while any of ``job_ids`` runs in ``dsn``.
- ``raw_ingest``: ``concurrency`` asyncpg connections each insert an event and call
  ``pgmq.send`` in one transaction, for ``seconds`` after ``warmup_s``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg


class HttpConn:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        body = await self.reader.readexactly(length) if length else b""
        return status, body


def request_bytes(url: str, method: str, path: str, body: bytes) -> bytes:
    host = urlsplit(url).netloc
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


class Window:
    """Counts only what completes between ``warmup_s`` and ``warmup_s + seconds``."""

    def __init__(self, warmup_s: float, seconds: float) -> None:
        now = time.perf_counter()
        self.start = now + warmup_s
        self.end = self.start + seconds
        self.count = 0
        self.items = 0
        self.errors = 0

    def over(self) -> bool:
        return time.perf_counter() >= self.end

    def record(self, items: int, ok: bool) -> None:
        now = time.perf_counter()
        if self.start <= now < self.end:
            if ok:
                self.count += 1
                self.items += items
            else:
                self.errors += 1

    def result(self, seconds: float) -> dict[str, Any]:
        return {
            "requests": self.count,
            "items": self.items,
            "errors": self.errors,
            "seconds": seconds,
            "requests_per_s": self.count / seconds,
            "items_per_s": self.items / seconds,
        }


async def http_load(spec: dict[str, Any]) -> dict[str, Any]:
    url = spec["url"]
    host, port = _host_port(url)
    raws = [
        request_bytes(url, "POST", spec["path"], json.dumps(b).encode()) for b in spec["bodies"]
    ]
    expect = set(spec.get("expect", [200, 201, 202]))
    items = int(spec.get("items", 1))
    window = Window(float(spec.get("warmup_s", 1.0)), float(spec["seconds"]))
    first_error: list[str] = []

    async def worker(k: int) -> None:
        conn = HttpConn(host, port)
        await conn.open()
        i = k
        try:
            while not window.over():
                status, body = await conn.send(raws[i % len(raws)])
                i += spec["concurrency"]
                ok = status in expect
                if not ok and not first_error:
                    first_error.append(f"{status}: {body[:300]!r}")
                window.record(items, ok)
        finally:
            await conn.close()

    await asyncio.gather(*(worker(k) for k in range(int(spec["concurrency"]))))
    out = window.result(float(spec["seconds"]))
    out["first_error"] = first_error[0] if first_error else None
    return out


async def latency(spec: dict[str, Any]) -> dict[str, Any]:
    url = spec["url"]
    host, port = _host_port(url)
    raws = [
        request_bytes(url, "POST", spec["path"], json.dumps(b).encode()) for b in spec["bodies"]
    ]
    conn = HttpConn(host, port)
    await conn.open()
    lat: list[float] = []
    ids: list[list[str]] = []
    errors: list[str] = []
    try:
        for k, raw in enumerate(raws):
            t = time.perf_counter()
            status, body = await conn.send(raw)
            dt = time.perf_counter() - t
            if status != 200:
                errors.append(f"{status}: {body[:300]!r}")
                continue
            if k < int(spec.get("warmup", 0)):
                continue
            lat.append(dt * 1000)
            ids.append([r["id"] for r in json.loads(body)["results"]])
    finally:
        await conn.close()
    return {"latencies_ms": lat, "ids": ids, "errors": errors[:5], "n_errors": len(errors)}


async def latency_during(spec: dict[str, Any]) -> dict[str, Any]:
    """Like ``latency`` (``bodies`` cycled, one at a time), for as long as any of
    ``job_ids`` is still queued or running in ``dsn`` (at most ``max_seconds``): the
    requests sent while the jobs ran count (the first one always)."""
    url = spec["url"]
    host, port = _host_port(url)
    raws = [
        request_bytes(url, "POST", spec["path"], json.dumps(b).encode()) for b in spec["bodies"]
    ]
    busy = asyncio.Event()
    busy.set()

    async def watch() -> None:
        db = await asyncpg.connect(spec["dsn"])
        try:
            deadline = time.perf_counter() + float(spec["max_seconds"])
            while time.perf_counter() < deadline:
                running = await db.fetchval(
                    "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[])"
                    " AND status IN ('queued', 'running')",
                    spec["job_ids"],
                )
                if not running:
                    break
                await asyncio.sleep(0.1)
        finally:
            busy.clear()
            await db.close()

    watcher = asyncio.create_task(watch())
    conn = HttpConn(host, port)
    await conn.open()
    lat: list[float] = []
    errors: list[str] = []
    try:
        k = 0
        while busy.is_set():
            t = time.perf_counter()
            status, body = await conn.send(raws[k % len(raws)])
            dt = time.perf_counter() - t
            k += 1
            if status != 200:
                errors.append(f"{status}: {body[:300]!r}")
            else:
                lat.append(dt * 1000)
    finally:
        await conn.close()
        await watcher
    return {"latencies_ms": lat, "errors": errors[:5], "n_errors": len(errors)}


async def raw_ingest(spec: dict[str, Any]) -> dict[str, Any]:
    """The floor under POST /v1/events: the same rows and message, straight from asyncpg."""
    window = Window(float(spec.get("warmup_s", 1.0)), float(spec["seconds"]))
    texts = [b["content"]["text"] for b in spec["bodies"]]
    conc = int(spec["concurrency"])

    async def worker(k: int) -> None:
        conn = await asyncpg.connect(spec["dsn"])
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        i = k
        try:
            while not window.over():
                ident = uuid.uuid4()
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO events (id, content, metadata) VALUES ($1, $2, $3)",
                        ident,
                        {"text": texts[i % len(texts)]},
                        {"source": "bench"},
                    )
                    await conn.execute(
                        "SELECT pgmq.send('embed', $1::jsonb)",
                        {"v": 1, "job_id": None, "kind": "event", "ids": [str(ident)]},
                    )
                i += conc
                window.record(1, True)
        finally:
            await conn.close()

    await asyncio.gather(*(worker(k) for k in range(conc)))
    return window.result(float(spec["seconds"]))


MODES = {
    "http": http_load,
    "latency": latency,
    "latency_during": latency_during,
    "raw_ingest": raw_ingest,
}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    with open(args[0]) as f:
        spec = json.load(f)
    out = asyncio.run(MODES[spec["mode"]](spec))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
