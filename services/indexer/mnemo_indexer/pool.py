"""Parsing off the event loop, in worker processes, each file bounded in time.

pebble's ProcessPool kills and replaces a worker process whose task overruns its timeout,
which concurrent.futures cannot do; a pathological file fails alone.

A parser process that dies outside a task pebble can pin on it (idle, killed by the OOM
killer or an operator, or while it starts) breaks pebble's whole pool for good ("All workers
expired": every later task fails). ``ParsePool`` then starts a new pool, and the files that
were in hand fail as transient, to be parsed again with their message."""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pebble import ProcessExpired, ProcessPool

from mnemo_core import logging as mlog
from mnemo_indexer.chunking import ParseError, parse_file
from mnemo_indexer.records import FileRows, file_rows

log = mlog.get(__name__)

__all__ = ["FileFailed", "FileRows", "ParsePool", "parse_and_build"]


class FileFailed(Exception):
    """This file cannot be indexed; ``reason`` says why (shown on its job). A ``transient``
    failure (timeout, crashed parser) is retried with its message before it counts, for at
    most ``deliveries`` deliveries of it when that is set (else the worker's max attempts)."""

    def __init__(
        self, reason: str, *, transient: bool = False, deliveries: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.deliveries = deliveries


# A file that overran the time bound is parsed once more (the first overrun may have been a
# starved machine, or a parser process stopped); twice is the file itself, and each attempt
# costs a parser process and the whole bound.
TIMEOUT_DELIVERIES = 2


def parse_and_build(path: str, content: str, language: str | None) -> FileRows:
    """Runs in a worker process: parse, then build the rows to write."""
    return file_rows(parse_file(path, content, language))


class ParsePool:
    def __init__(
        self, processes: int, timeout_s: float, *, log_format: str = "auto", log_level: str = "info"
    ) -> None:
        self.timeout_s = timeout_s
        self._processes = max(1, processes)
        self._log = (log_format, log_level)
        self._closed = False
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPool:
        # forkserver: never fork a process that runs an event loop and threads. Each parser
        # process logs like its indexer (a missing grammar is said once per process).
        return ProcessPool(
            max_workers=self._processes,
            context=multiprocessing.get_context("forkserver"),
            initializer=mlog.configure,
            initargs=("indexer-parser", *self._log),
        )

    def _replace(self, broken: ProcessPool) -> None:
        """A new pool for a broken one (once, however many of its tasks report it)."""
        if self._pool is broken:
            log.warning("parser_pool_broken", action="starting a new one")
            self._pool = self._new_pool()
            broken.stop()

    def _schedule(self, path: str, content: str, language: str | None) -> tuple[ProcessPool, Any]:
        def schedule(pool: ProcessPool) -> Any:
            return pool.schedule(
                parse_and_build, args=(path, content, language), timeout=self.timeout_s
            )

        pool = self._pool
        try:
            return pool, schedule(pool)
        except RuntimeError:  # pebble: "Unexpected error within the Pool" (it broke earlier)
            if self._closed:
                raise
            self._replace(pool)
            return self._pool, schedule(self._pool)

    async def parse(self, path: str, content: str, language: str | None) -> FileRows:
        pool, future = self._schedule(path, content, language)
        try:
            return await asyncio.wrap_future(future)
        except ParseError as exc:
            raise FileFailed(exc.reason) from exc
        except FutureTimeout as exc:
            raise FileFailed(
                f"parsing took longer than {self.timeout_s:g}s",
                transient=True,
                deliveries=TIMEOUT_DELIVERIES,
            ) from exc
        except ProcessExpired as exc:
            raise FileFailed(
                f"the parser crashed (exit code {exc.exitcode})", transient=True
            ) from exc
        except BrokenProcessPool as exc:
            self._replace(pool)
            raise FileFailed(
                "a parser process died; the parsers were restarted", transient=True
            ) from exc
        except (RecursionError, MemoryError, ValueError, UnicodeError) as exc:
            raise FileFailed(f"the parser failed: {type(exc).__name__}: {exc}") from exc

    async def warm_up(self, attempts: int = 3) -> None:
        """Start the parser processes now (pebble starts them on the first task) and parse
        one line of Python in one of them, so that the first files of the first job do not
        wait for a process start, and a parser that cannot parse at all fails at start (a
        parser process that dies while it starts is replaced, ``attempts`` times in all)."""
        for attempt in range(1, attempts + 1):
            try:
                await self.parse("warm_up.py", "def warm_up():\n    return None\n", "python")
                return
            except FileFailed as exc:
                if not exc.transient or attempt == attempts:
                    raise
                log.warning("parser_warm_up_failed", error=exc.reason, attempt=attempt)

    def close(self) -> None:
        self._closed = True
        self._pool.stop()
        self._pool.join(timeout=5)
