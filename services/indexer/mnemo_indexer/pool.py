"""Parsing off the event loop, in worker processes, each file bounded in time.

pebble's ProcessPool kills and replaces a worker process whose task overruns its timeout,
which concurrent.futures cannot do; a pathological file fails alone."""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import TimeoutError as FutureTimeout

from pebble import ProcessExpired, ProcessPool

from mnemo_core import logging as mlog
from mnemo_indexer.chunking import ParseError, parse_file
from mnemo_indexer.records import FileRows, file_rows

__all__ = ["FileFailed", "FileRows", "ParsePool", "parse_and_build"]


class FileFailed(Exception):
    """This file cannot be indexed; ``reason`` says why (shown on its job). A ``transient``
    failure (timeout, crashed parser) is retried with its message before it counts."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


def parse_and_build(path: str, content: str, language: str | None) -> FileRows:
    """Runs in a worker process: parse, then build the rows to write."""
    return file_rows(parse_file(path, content, language))


class ParsePool:
    def __init__(
        self, processes: int, timeout_s: float, *, log_format: str = "auto", log_level: str = "info"
    ) -> None:
        self.timeout_s = timeout_s
        # forkserver: never fork a process that runs an event loop and threads. Each parser
        # process logs like its indexer (a missing grammar is said once per process).
        self._pool = ProcessPool(
            max_workers=max(1, processes),
            context=multiprocessing.get_context("forkserver"),
            initializer=mlog.configure,
            initargs=("indexer-parser", log_format, log_level),
        )

    async def parse(self, path: str, content: str, language: str | None) -> FileRows:
        future = self._pool.schedule(
            parse_and_build, args=(path, content, language), timeout=self.timeout_s
        )
        try:
            return await asyncio.wrap_future(future)
        except ParseError as exc:
            raise FileFailed(exc.reason) from exc
        except FutureTimeout as exc:
            raise FileFailed(
                f"parsing took longer than {self.timeout_s:g}s", transient=True
            ) from exc
        except ProcessExpired as exc:
            raise FileFailed(
                f"the parser crashed (exit code {exc.exitcode})", transient=True
            ) from exc
        except (RecursionError, MemoryError, ValueError, UnicodeError) as exc:
            raise FileFailed(f"the parser failed: {type(exc).__name__}: {exc}") from exc

    async def warm_up(self) -> None:
        """Start the parser processes now (pebble starts them on the first task) and parse
        one line of Python in one of them, so that the first files of the first job do not
        wait for a process start, and a parser that cannot parse at all fails at start."""
        await self.parse("warm_up.py", "def warm_up():\n    return None\n", "python")

    def close(self) -> None:
        self._pool.stop()
        self._pool.join(timeout=5)
