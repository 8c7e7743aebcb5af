"""What every worker's main() shares: waiting for the schema, signals, the grace period,
and the container health check."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Awaitable, Callable

from mnemo_core import db, migrate
from mnemo_core import logging as mlog
from mnemo_core.errors import DatabaseUnavailable
from mnemo_core.queries import Q

log = mlog.get(__name__)


async def wait_for_schema(dsn: str, *, application_name: str, within_s: float = 120.0) -> None:
    """Workers never migrate: they wait until the API / migrate step has done it."""
    deadline = asyncio.get_running_loop().time() + within_s
    delay = 0.2
    while True:
        try:
            conn = await db.connect(dsn, application_name=application_name)
            try:
                if not await migrate.pending(conn):
                    return
                reason = "migrations pending"
            finally:
                await conn.close()
        except (DatabaseUnavailable, *db.UNAVAILABLE_ERRORS) as exc:  # type: ignore[misc]
            reason = str(exc)
        if asyncio.get_running_loop().time() > deadline:
            raise DatabaseUnavailable(f"database not ready after {within_s:.0f}s: {reason}")
        log.info("waiting_for_database", reason=reason, retry_in_s=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


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
