"""What every service's main() shares: dying with the local runner, waiting for the schema,
signals, the grace period, and the container health check."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import asyncpg
import tenacity

from mnemo_core import db, migrate
from mnemo_core import logging as mlog
from mnemo_core.errors import DatabaseUnavailable
from mnemo_core.queries import Q
from mnemo_core.settings import Settings, SettingsError
from mnemo_core.settings import load as load_settings

log = mlog.get(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

T = TypeVar("T")


def start(service: str, **overrides: object) -> Settings:
    """What a service's main() does first: read the settings (an invalid one exits 2 with
    the variable named), configure logging (asyncpg's pool warnings about a database that
    is away without their tracebacks), and stop with the supervisor if there is one."""
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        mlog.configure(service, os.environ.get("MNEMO_LOG_FORMAT", "auto"))
        log.error("invalid_settings", error=str(exc))
        sys.exit(2)
    mlog.configure(service, settings.log_format, settings.log_level)
    db.quiet_pool_warnings()
    die_with_parent(settings.supervisor_pid)
    return settings


def worker_arguments(kind: str, description: str | None) -> argparse.ArgumentParser:
    """A worker command's argument parser with what every worker takes: ``--once`` and the
    container health check ``--check``."""
    p = argparse.ArgumentParser(prog=f"mnemo-{kind}", description=description)
    p.add_argument("--once", action="store_true", help="drain the queue, then exit")
    p.add_argument(
        "--check",
        action="store_true",
        help=f"health check: exit 0 iff an {kind} on this host beat recently",
    )
    return p


def run_main(
    kind: str,
    amain: Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]],
    args: argparse.Namespace,
) -> NoReturn:
    """A worker's main(): :func:`start`, then ``amain`` to its exit code; anything it raises
    is logged (``worker_failed``, with the service's name) and exits 1."""
    settings = start(kind)
    try:
        code = asyncio.run(amain(args, settings))
    except Exception as exc:
        log.exception("worker_failed", error=str(exc))
        code = 1
    sys.exit(code)


def die_with_parent(parent_pid: int, sig: signal.Signals = signal.SIGTERM) -> bool:
    """Get ``sig`` when the process that started us dies, however it dies (Linux only).

    ``mnemo up`` starts every service with MNEMO_SUPERVISOR_PID set to its own pid; a
    service calls this first thing, so a supervisor killed with SIGKILL (or crashing) does
    not leave its API holding the port and its workers running under PID 1: the kernel
    sends them SIGTERM and they stop the usual graceful way.

    The child asks for it itself, after exec, rather than through a ``preexec_fn`` of
    subprocess: that hook runs Python between fork and exec, which is unsafe in a parent
    with threads (asyncio's child watcher and executor are threads) and is refused in
    subinterpreters. The parent may die before the call: then it was re-parented already
    and no signal will come, so compare ``getppid()`` after asking and go at once.

    Returns whether the request is in force (False: not Linux, not under a supervisor)."""
    if not parent_pid or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        log.warning("pdeathsig_failed", errno=ctypes.get_errno())
        return False
    if os.getppid() != parent_pid:
        log.warning("supervisor_gone", supervisor_pid=parent_pid)
        os.kill(os.getpid(), sig)
    return True


async def _with_backoff(attempt: Callable[[], Awaitable[T]], *, within_s: float) -> T:
    """``attempt()``, again after 0.2, 0.4, 0.8 ... 5 s while the database is unavailable
    (it raises ``DatabaseUnavailable`` or a connection error), for ``within_s`` seconds in
    all; then ``DatabaseUnavailable`` with the last reason."""
    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(db.UNAVAILABLE_ERRORS),
        wait=tenacity.wait_exponential(multiplier=0.2, max=5.0),
        stop=tenacity.stop_after_delay(within_s),
        before_sleep=_log_waiting,
    )
    try:
        # The loop form awaits ``attempt()`` itself: tenacity's call form would not await
        # a lambda that returns a coroutine.
        async for try_ in retrying:
            with try_:
                return await attempt()
    except tenacity.RetryError as exc:
        last = exc.last_attempt.exception()
        raise DatabaseUnavailable(f"database not ready after {within_s:.0f}s: {last}") from last
    raise AssertionError("unreachable: tenacity either returns an attempt or raises")


def _log_waiting(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    sleep = state.next_action.sleep if state.next_action else None
    log.info("waiting_for_database", reason=str(exc), retry_in_s=sleep)


async def wait_for_schema(dsn: str, *, application_name: str, within_s: float = 120.0) -> None:
    """Workers never migrate: they wait until the API / migrate step has done it."""

    async def migrated() -> None:
        conn = await db.connect(dsn, application_name=application_name)
        try:
            if await migrate.pending(conn):
                raise DatabaseUnavailable("migrations pending")
        finally:
            await conn.close()

    await _with_backoff(migrated, within_s=within_s)


async def migrate_when_ready(
    dsn: str, *, embedding_dim: int, application_name: str, within_s: float = 120.0
) -> list[str]:
    """Wait for the database (with ``wait_for_schema``'s backoff), then apply the pending
    migrations; returns their names. A migration that fails is not retried."""
    conn = await _with_backoff(
        lambda: db.connect(dsn, application_name=application_name), within_s=within_s
    )
    try:
        return await migrate.migrate(conn, embedding_dim=embedding_dim)
    finally:
        await conn.close()


async def open_pool(
    dsn: str,
    *,
    application_name: str,
    min_size: int,
    max_size: int,
    command_timeout_s: float = 60.0,
    within_s: float = 120.0,
) -> asyncpg.Pool:
    """A service's pool, once its database is up with the schema in place. The database can
    go away again between that check and the pool's first connection (the embedder loads
    its model in between, seconds): the service then waits again, as at start, instead of
    exiting. Fails like ``wait_for_schema`` after ``within_s`` seconds in all."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        # Waiting (with its backoff) is wait_for_schema's: a failed pool goes back to it.
        await wait_for_schema(
            dsn, application_name=application_name, within_s=max(deadline - loop.time(), 0.0)
        )
        try:
            return await db.create_pool(
                dsn,
                application_name=application_name,
                min_size=min_size,
                max_size=max_size,
                command_timeout_s=command_timeout_s,
            )
        except DatabaseUnavailable as exc:
            if loop.time() > deadline:
                raise
            log.info("waiting_for_database", reason=str(exc))
            await asyncio.sleep(0.2)  # never a tight loop against a flapping server


async def run_until_stopped(
    run: Awaitable[None], stop: Callable[[], None], *, grace_s: float
) -> None:
    """Run a worker; SIGTERM/SIGINT ask it to stop; past the grace period it is cancelled."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(run)
    stopping = asyncio.Event()

    def on_signal(signame: str) -> None:
        log.info("signal_received", signal=signame)
        stop()
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        waiter = asyncio.ensure_future(stopping.wait())
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            try:
                await asyncio.wait_for(asyncio.shield(task), grace_s)
            except TimeoutError:
                log.warning("grace_period_over", grace_s=grace_s)
                task.cancel()
        waiter.cancel()
        await task
    except asyncio.CancelledError:
        pass
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def check_heartbeat(dsn: str, kind: str, fresh_s: float) -> bool:
    """Container health check: a worker of this kind on this host beat recently."""
    conn = await db.connect(dsn, application_name=f"mnemo-{kind}:check")
    try:
        return bool(
            await conn.fetchval(Q["worker_alive_on_host"], kind, socket.gethostname(), fresh_s)
        )
    finally:
        await conn.close()
