"""The stack one benchmark run measures: an embedded PostgreSQL started the way a user runs it
(durable), in a temporary directory; a fresh database per measurement; the services started
as the real console commands (``mnemo-api``, ``mnemo-embedder``, ``mnemo-indexer``) against
it, with their peak memory sampled the whole time."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from mnemo_core import db, migrate
from mnemo_core.localpg import LocalPostgres, free_port

BIN = Path(sys.executable).parent


class Service:
    """One service process, logging to a file in the run's directory."""

    def __init__(self, kind: str, name: str, argv: list[str], env: dict[str, str], logs: Path):
        self.kind = kind
        self.name = name
        self.argv = [str(BIN / argv[0]), *argv[1:]]
        self.env = env
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def tree_rss(pid: int, children: bool = True) -> int:
    """RSS of a process plus all its descendants (pages they share are counted in each)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)] if children else [root]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


class RssMonitor(threading.Thread):
    """Samples every registered service's process tree; keeps the peak per kind."""

    # Listing descendants walks /proc: only for the kinds that have them (the indexer's
    # parser processes), so sampling stays a rounding error on the machine it measures.
    WITH_CHILDREN = frozenset({"indexer"})

    def __init__(self, interval_s: float = 0.25) -> None:
        super().__init__(name="rss-monitor", daemon=True)
        self.interval_s = interval_s
        self.peaks: dict[str, int] = {}
        self._services: list[Service] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def watch(self, service: Service) -> None:
        with self._lock:
            self._services.append(service)

    def run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        with self._lock:
            live = [s for s in self._services if s.alive()]
            self._services = live
        for s in live:
            rss = tree_rss(s.pid, children=s.kind in self.WITH_CHILDREN)
            if rss > self.peaks.get(s.kind, 0):
                self.peaks[s.kind] = rss

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Stack:
    """Everything one run starts, and stops again."""

    model: str
    dim: int = 384
    keep: bool = False
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mnemo-bench-")))
    pg: LocalPostgres | None = None
    monitor: RssMonitor = field(default_factory=RssMonitor)
    services: list[Service] = field(default_factory=list)
    _n: int = 0

    @property
    def logs(self) -> Path:
        path = self.root / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self) -> None:
        self.pg = LocalPostgres(self.root / "data", port=free_port(), database="postgres")
        self.pg.start()
        self.monitor.start()

    def close(self) -> None:
        for s in self.services:
            s.stop()
        self.monitor.stop()
        if self.pg is not None:
            self.pg.stop()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    async def database(self, label: str) -> str:
        """A fresh database with the schema applied; returns its URL."""
        assert self.pg is not None
        self._n += 1
        name = f"bench_{self._n}_{label}"
        admin = await asyncpg.connect(self.pg.dsn("postgres"))
        try:
            await admin.execute(f"CREATE DATABASE {name}")
        finally:
            await admin.close()
        dsn = self.pg.dsn(name)
        conn = await db.connect(dsn, application_name="mnemo-bench:migrate")
        try:
            await migrate.migrate(conn, embedding_dim=self.dim)
        finally:
            await conn.close()
        return dsn

    def env(self, dsn: str, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
        env.update(
            {
                "MNEMO_DATABASE_URL": dsn,
                "MNEMO_EMBEDDING_MODEL": self.model,
                "MNEMO_EMBEDDING_DIM": str(self.dim),
                "MNEMO_LOG_FORMAT": "json",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
            }
        )
        env.update(overrides)
        return env

    def _start(self, kind: str, argv: list[str], env: dict[str, str]) -> Service:
        name = f"{len(self.services) + 1:02d}-{kind}"
        svc = Service(kind, name, argv, env, self.logs).start()
        self.services.append(svc)
        self.monitor.watch(svc)
        return svc

    async def api(self, dsn: str, **env: str) -> tuple[Service, str]:
        port = free_port()
        svc = self._start("api", ["mnemo-api"], self.env(dsn, MNEMO_API_PORT=str(port), **env))
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url, svc)
        return svc, url

    def embedder(self, dsn: str, threads: int, **env: str) -> Service:
        return self._start(
            "embedder", ["mnemo-embedder"], self.env(dsn, MNEMO_TORCH_THREADS=str(threads), **env)
        )

    def indexer(self, dsn: str, **env: str) -> Service:
        return self._start("indexer", ["mnemo-indexer"], self.env(dsn, **env))

    def stop(self, *services: Service) -> None:
        for s in services:
            s.stop()


async def wait_until(
    check: Callable[[], Awaitable[Any]], *, within_s: float, what: str, interval: float = 0.05
) -> Any:
    """Poll ``check`` until truthy; fail after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {within_s:g}s waiting for {what} (last: {last!r})")


async def wait_ready(url: str, svc: Service, within_s: float = 90.0) -> None:
    async with httpx.AsyncClient(timeout=2) as client:

        async def ready() -> bool:
            svc.check()
            try:
                return (await client.get(f"{url}/ready")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(ready, within_s=within_s, what=f"{svc.name} ready", interval=0.1)


async def wait_workers(
    dsn: str, kind: str, n: int, services: list[Service], within_s: float = 180.0
) -> None:
    """Until ``n`` workers of ``kind`` have registered (an embedder registers after its model
    is loaded) and none of ``services`` has died."""
    conn = await asyncpg.connect(dsn)
    try:

        async def registered() -> bool:
            for s in services:
                s.check()
            got = await conn.fetchval(
                "SELECT count(*) FROM workers WHERE kind = $1 AND stopped_at IS NULL", kind
            )
            return int(got) >= n

        await wait_until(registered, within_s=within_s, what=f"{n} {kind}(s)", interval=0.1)
    finally:
        await conn.close()
