"""Helpers for tests: waiting on conditions with a deadline, never fixed sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx

from mnemo_core import db, migrate
from mnemo_core.localpg import LocalPostgres

T = TypeVar("T")
#: The database the session's fixture migrates once; tests clone it.
TEMPLATE = "mnemo_template"
DIM = 384
BIN = Path(sys.executable).parent


async def wait_for(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_for_sync(
    check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def admin_sql(pg: LocalPostgres, sql: str) -> None:
    """Run one statement on the server's ``postgres`` database (CREATE / DROP DATABASE)."""

    async def run() -> None:
        conn = await asyncpg.connect(pg.dsn("postgres"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextlib.contextmanager
def cloned_database(pg: LocalPostgres, prefix: str) -> Iterator[str]:
    """A database with the whole schema (cloned from :data:`TEMPLATE`) for the block."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin_sql(pg, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    try:
        yield pg.dsn(name)
    finally:
        admin_sql(pg, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def migrate_now(dsn: str, embedding_dim: int = DIM) -> None:
    """Apply the migrations to ``dsn`` (blocking), as ``mnemo migrate`` would."""

    async def run() -> None:
        conn = await db.connect(dsn, application_name="tests:migrate")
        try:
            await migrate.migrate(conn, embedding_dim=embedding_dim)
        finally:
            await conn.close()

    asyncio.run(run())


class Proc:
    """A real service process (the console command the containers run), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = [str(BIN / argv[0]), *argv[1:]]
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def service_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    env.update({"MNEMO_LOG_FORMAT": "json", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env.update(overrides)
    return env


def wait_ready(url: str, proc: Proc, timeout: float = 60.0) -> None:
    def ready() -> bool:
        assert proc.proc is not None
        if proc.proc.poll() is not None:
            raise AssertionError(f"{proc.name} exited early:\n{proc.log()[-3000:]}")
        try:
            return httpx.get(f"{url}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for_sync(ready, timeout=timeout, interval=0.2, what=f"{proc.name} ready")


def tar_gz_of(files: dict[str, str]) -> bytes:
    """A .tar.gz holding ``files`` (path -> text), as an upload would carry them."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bomb(name: str = "zeros.txt", size: int = 50_000_000) -> bytes:
    """One member declaring ``size`` bytes of zeros: about a thousandth of it compressed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, io.BytesIO(b"\0" * size))
    return buf.getvalue()
