"""``mnemo up``: the whole system as local processes.

Starts an embedded PostgreSQL 18 (unless MNEMO_DATABASE_URL names one), applies the
migrations, then runs the same console commands the containers run (``mnemo-api``,
``mnemo-embedder`` xN, ``mnemo-indexer`` xM) and supervises them: a child that dies is
restarted with backoff, like ``restart: unless-stopped``. Their output is interleaved:
with a name prefix on a terminal; otherwise as JSON lines, each child's carrying its name
in a ``process`` field (``embedder-2``).

Ctrl-C, SIGTERM and SIGHUP (the terminal closed) all stop the children, then PostgreSQL.
A terminal can also close without a SIGHUP reaching us: when ``make`` leads the session
(``tmux new "make run"``, ``ssh -t host make run``) the kernel signals make alone, which
waits for its children; so a supervisor started on a terminal also checks every second
that it still has one. The children run in sessions of their own, so a signal to the
terminal's process group reaches only the supervisor, which stops them in order (the API
first, so no write is accepted while the workers finish their batches); each asks the
kernel (Linux ``PR_SET_PDEATHSIG``, see ``mnemo_core.service.die_with_parent``) for SIGTERM
if the supervisor dies without that chance (SIGKILL, a crash). PostgreSQL is started by
``pg_ctl`` as a daemon and survives such a death; the next ``mnemo up`` adopts it. An
embedded PostgreSQL that stops while the supervisor runs (killed, out of memory) is started
again, with the same backoff; the services reconnect by themselves."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

import structlog

from mnemo_core import logging as mlog
from mnemo_core import service
from mnemo_core.errors import MnemoError
from mnemo_core.localpg import can_bind
from mnemo_core.settings import Settings
from mnemo_core.worker_base import wait

log = mlog.get(__name__)

RESTART_MAX_DELAY_S = 30.0
STABLE_AFTER_S = 30.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TERMINAL_CHECK_S = 1.0
DATABASE_CHECK_S = 2.0


class Database(Protocol):
    """The embedded PostgreSQL as the supervisor sees it (``LocalPostgres``)."""

    def running(self) -> bool: ...

    def start(self) -> str: ...


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
    # Stopped, and waited for, before the others: the API, which takes the writes.
    stop_first: bool = False


_COLORS = ["\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m"]


def _command(name: str) -> str:
    """The console script next to this interpreter (the venv's), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.path.exists(here) else (shutil.which(name) or name)


def json_line(child: str, raw: bytes) -> str:
    """A child's output line as one JSON object: its own JSON with ``process`` added, or, for
    a line that is not a JSON object (a crash before logging was set up), that line as the
    ``line`` field of a ``child_output`` event."""
    text = raw.decode(errors="replace").rstrip("\r\n")
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        obj = {
            "event": "child_output",
            "line": text,
            "level": "info",
            "timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        }
    return json.dumps({"process": child, **obj}) + "\n"


class Supervisor:
    def __init__(
        self, children: list[Child], *, json_output: bool, database: Database | None = None
    ) -> None:
        self.children = children
        self.database = database
        self._stopping = asyncio.Event()
        self._json = json_output
        self._tty = not json_output and sys.stdout.isatty()
        # The terminal may go away under us (SIGHUP): output then fails quietly, the
        # children's pipes keep being drained, and the stop goes on.
        self._out = mlog.LogStream(sys.stdout)
        self._terminals = [fd for fd in (0, 1, 2) if os.isatty(fd)]

    def stop(self, signame: str = "") -> None:
        if signame and not self._stopping.is_set():
            log.info("signal_received", signal=signame)
        self._stopping.set()

    async def _pump(self, child: Child, stream: asyncio.StreamReader) -> None:
        prefix = f"{child.name:<12}| "
        if self._tty:
            prefix = f"{child.color}{prefix}\033[0m"
        while line := await stream.readline():
            if self._json:
                self._out.write(json_line(child.name, line))
            else:
                self._out.write(prefix + line.decode(errors="replace"))
            self._out.flush()

    async def _watch_terminal(self) -> None:
        """A hung-up terminal stops being one (its ioctls fail with EIO): stop, as SIGHUP."""
        while self._terminals and not self._stopping.is_set():
            await wait(self._stopping, TERMINAL_CHECK_S)
            if not all(os.isatty(fd) for fd in self._terminals):
                log.info("terminal_closed")
                self.stop()

    async def _watch_database(self) -> None:
        """Start the embedded PostgreSQL again when it has stopped under us."""
        if self.database is None:
            return
        db = self.database
        delay = 1.0
        while not self._stopping.is_set():
            await wait(self._stopping, DATABASE_CHECK_S)
            if self._stopping.is_set() or await asyncio.to_thread(db.running):
                continue
            log.warning("postgres_exited", action="starting it again")
            try:
                await asyncio.to_thread(db.start)
                log.info("postgres_restarted")
                delay = 1.0
            except (MnemoError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
                log.error("postgres_restart_failed", error=str(exc), retry_in_s=delay)
                await wait(self._stopping, delay)
                delay = min(delay * 2, RESTART_MAX_DELAY_S)

    async def _start(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            env=child.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Ctrl-C and the terminal's SIGHUP reach us only; we stop the children in order.
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        assert child.proc.stdout is not None
        child.tasks = [asyncio.create_task(self._pump(child, child.proc.stdout))]
        log.info("child_started", child=child.name, pid=child.proc.pid)

    async def _watch(self, child: Child) -> None:
        # Not a tenacity loop like the services' database waits: a child that exits is not
        # a failed call to retry; the delay goes back to 1 s after a run that lasted.
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

    async def _terminate(self, grace_s: float, workers_grace_s: float = 0.0) -> None:
        """Stop the children within ``grace_s`` seconds in all. The API goes first, and the
        workers once it has exited: no new write is accepted while they finish the batches
        in their hands. ``workers_grace_s`` of the budget is kept for the workers (their own
        grace period): an API slow to stop delays their SIGTERM by the rest of the budget at
        most. A child still running at the end of the budget is killed."""
        deadline = time.monotonic() + grace_s
        running = [c for c in self.children if c.proc and c.proc.returncode is None]
        first = [c for c in running if c.stop_first]
        then = [c for c in running if not c.stop_first]
        self._signal(first, signal.SIGTERM)
        if first and then:
            await self._exited(first, deadline - workers_grace_s)
        self._signal(then, signal.SIGTERM)
        for c in running:
            assert c.proc is not None
            try:
                await asyncio.wait_for(c.proc.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("child_killed", child=c.name)
                c.proc.kill()
                await c.proc.wait()

    @staticmethod
    def _signal(children: list[Child], sig: signal.Signals) -> None:
        for c in children:
            if c.proc is not None and c.proc.returncode is None:
                c.proc.send_signal(sig)

    @staticmethod
    async def _exited(children: list[Child], until: float) -> None:
        """Wait for ``children`` to exit, until the monotonic time ``until`` at most."""
        waits = [c.proc.wait() for c in children if c.proc is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), max(0.0, until - time.monotonic()))
        except TimeoutError:
            still = [c.name for c in children if c.proc and c.proc.returncode is None]
            log.warning("children_slow_to_stop", children=still, action="stopping the others")

    async def run(self, grace_s: float, *, workers_grace_s: float = 0.0) -> None:
        """Run until a stop signal, then stop the children (see ``_terminate``); the
        signals' previous handlers are back in place when this returns."""
        loop = asyncio.get_running_loop()
        previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.stop, sig.name)
        try:
            watchers = [asyncio.create_task(self._watch(c)) for c in self.children]
            watchers.append(asyncio.create_task(self._watch_terminal()))
            watchers.append(asyncio.create_task(self._watch_database()))
            await self._stopping.wait()
            log.info("stopping_children")
            await self._terminate(grace_s, workers_grace_s)
            await asyncio.gather(*watchers, return_exceptions=True)
        finally:
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                if handler is not None:  # None: installed outside Python, left as it is
                    signal.signal(sig, handler)


def plan(settings: Settings, dsn: str, *, json_output: bool) -> list[Child]:
    env = dict(os.environ)
    env["MNEMO_DATABASE_URL"] = dsn
    env["MNEMO_LOG_FORMAT"] = "json" if json_output else "console"
    env["MNEMO_SUPERVISOR_PID"] = str(os.getpid())
    children = [Child("api", [_command("mnemo-api")], env, stop_first=True)]
    for i in range(settings.embedders):
        children.append(Child(f"embedder-{i + 1}", [_command("mnemo-embedder")], env))
    for i in range(settings.indexers):
        children.append(Child(f"indexer-{i + 1}", [_command("mnemo-indexer")], env))
    for i, c in enumerate(children):
        c.color = _COLORS[i % len(_COLORS)]
    return children


class StopRequested(Exception):
    """A stop signal arrived while ``mnemo up`` was starting (before the supervisor ran)."""


@contextmanager
def _stop_signals() -> Iterator[dict[str, bool]]:
    """While starting, a stop signal raises :class:`StopRequested` (so PostgreSQL, if it
    is already up, is stopped on the way out); once stopping, further ones are noted and
    ignored, so a second SIGHUP or Ctrl-C cannot cut the stop of PostgreSQL short."""
    state = {"stopping": False}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if state["stopping"]:
            log.info("signal_ignored_while_stopping", signal=name)
            return
        raise StopRequested(name)

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        yield state
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def preflight(settings: Settings) -> str | None:
    """Why ``mnemo up`` cannot start, before it starts anything: the API's port is taken
    (an API left running, another ``mnemo up``) would only make the API crash-loop."""
    if not can_bind(settings.api_host, settings.api_port):
        return (
            f"{settings.api_host}:{settings.api_port} is already in use (MNEMO_API_PORT): "
            "is another `mnemo up` or mnemo-api running? Stop it, or set MNEMO_API_PORT "
            "to a free port"
        )
    return None


def up(settings: Settings) -> int:
    # Our own lines (and PostgreSQL's set-up) are tagged like the children's.
    structlog.contextvars.bind_contextvars(process="up")
    problem = preflight(settings)
    if problem:
        log.error("api_port_in_use", port=settings.api_port, error=problem)
        return 1
    json_output = mlog.uses_json(settings.log_format)
    pg = None
    with _stop_signals() as state:
        try:
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
            # An external database may still be starting: waited for, two minutes at most.
            asyncio.run(
                service.migrate_when_ready(
                    dsn, embedding_dim=settings.embedding_dim, application_name="mnemo-up:migrate"
                )
            )
            log.info(
                "mnemo_up",
                api=f"http://{settings.api_host}:{settings.api_port}",
                embedders=settings.embedders,
                indexers=settings.indexers,
                database="embedded" if pg else "external",
            )
            children = plan(settings, dsn, json_output=json_output)
            supervisor = Supervisor(children, json_output=json_output, database=pg)
            # The workers' grace period, and 5 s for the API to stop before them.
            asyncio.run(
                supervisor.run(settings.grace_period_s + 5, workers_grace_s=settings.grace_period_s)
            )
        except StopRequested as exc:
            log.info("stopped_while_starting", signal=str(exc))
        except (MnemoError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
            log.error("mnemo_up_failed", error=str(exc))
            return 1
        finally:
            state["stopping"] = True
            if pg is not None:
                pg.stop()
    return 0
