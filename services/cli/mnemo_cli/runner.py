"""``mnemo up``: the whole system as local processes.

Starts an embedded PostgreSQL 18 (unless MNEMO_DATABASE_URL names one), applies the
migrations, then runs the same console commands the containers run (``mnemo-api``,
``mnemo-embedder`` xN, ``mnemo-indexer`` xM) and supervises them: a child that dies is
restarted with backoff, like ``restart: unless-stopped``. Their output is interleaved
with a name prefix. Ctrl-C (or SIGTERM) stops the children, then PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field

from mnemo_core import db, migrate
from mnemo_core import logging as mlog
from mnemo_core.settings import Settings

log = mlog.get(__name__)

RESTART_MAX_DELAY_S = 30.0
STABLE_AFTER_S = 30.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    color: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


_COLORS = ["\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m"]


def _command(name: str) -> str:
    """The console script next to this interpreter (the venv's), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.path.exists(here) else (shutil.which(name) or name)


class Supervisor:
    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self._stopping = asyncio.Event()
        self._tty = sys.stdout.isatty()

    def stop(self) -> None:
        self._stopping.set()

    async def _pump(self, child: Child, stream: asyncio.StreamReader) -> None:
        prefix = f"{child.name:<12}| "
        if self._tty:
            prefix = f"{child.color}{prefix}\033[0m"
        while line := await stream.readline():
            sys.stdout.write(prefix + line.decode(errors="replace"))
            sys.stdout.flush()

    async def _start(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            env=child.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
        )
        child.started_at = time.monotonic()
        assert child.proc.stdout is not None
        child.tasks = [asyncio.create_task(self._pump(child, child.proc.stdout))]
        log.info("child_started", child=child.name, pid=child.proc.pid)

    async def _watch(self, child: Child) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            await self._start(child)
            assert child.proc is not None
            code = await child.proc.wait()
            await asyncio.gather(*child.tasks, return_exceptions=True)
            if self._stopping.is_set():
                return
            if time.monotonic() - child.started_at > STABLE_AFTER_S:
                delay = 1.0
            child.restarts += 1
            log.warning(
                "child_exited",
                child=child.name,
                code=code,
                restart_in_s=delay,
                restarts=child.restarts,
            )
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
                return
            except TimeoutError:
                pass
            delay = min(delay * 2, RESTART_MAX_DELAY_S)

    async def _terminate(self, grace_s: float) -> None:
        running = [c for c in self.children if c.proc and c.proc.returncode is None]
        for c in running:
            assert c.proc is not None
            c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for c in running:
            assert c.proc is not None
            try:
                await asyncio.wait_for(c.proc.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("child_killed", child=c.name)
                c.proc.kill()
                await c.proc.wait()

    async def run(self, grace_s: float) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        watchers = [asyncio.create_task(self._watch(c)) for c in self.children]
        await self._stopping.wait()
        log.info("stopping_children")
        await self._terminate(grace_s)
        await asyncio.gather(*watchers, return_exceptions=True)


def plan(settings: Settings, dsn: str) -> list[Child]:
    env = dict(os.environ)
    env["MNEMO_DATABASE_URL"] = dsn
    env.setdefault("MNEMO_LOG_FORMAT", "console" if sys.stdout.isatty() else "json")
    children = [Child("api", [_command("mnemo-api")], env)]
    for i in range(settings.embedders):
        children.append(Child(f"embedder-{i + 1}", [_command("mnemo-embedder")], env))
    for i in range(settings.indexers):
        children.append(Child(f"indexer-{i + 1}", [_command("mnemo-indexer")], env))
    for i, c in enumerate(children):
        c.color = _COLORS[i % len(_COLORS)]
    return children


async def _migrate(dsn: str, dim: int) -> None:
    conn = await db.connect(dsn, application_name="mnemo-up:migrate")
    try:
        await migrate.migrate(conn, embedding_dim=dim)
    finally:
        await conn.close()


def up(settings: Settings) -> int:
    pg = None
    dsn = settings.database_url
    if not dsn:
        from mnemo_core.localpg import LocalPostgres

        pg = LocalPostgres(
            settings.data_dir,
            port=settings.db_port,
            user=settings.db_user,
            password=settings.db_password,
            database=settings.db_name,
        )
        dsn = pg.start()
    try:
        asyncio.run(_migrate(dsn, settings.embedding_dim))
        log.info(
            "mnemo_up",
            api=f"http://{settings.api_host}:{settings.api_port}",
            embedders=settings.embedders,
            indexers=settings.indexers,
            database="embedded" if pg else "external",
        )
        asyncio.run(Supervisor(plan(settings, dsn)).run(settings.grace_period_s + 5))
    finally:
        if pg is not None:
            pg.stop()
    return 0
