"""``mnemo-api``: serve the HTTP API with uvicorn (the same command locally and in containers)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys

import uvicorn

from mnemo_api.app import create_app, migrate_when_ready
from mnemo_api.protocol import JsonErrorsProtocol
from mnemo_core import logging as mlog
from mnemo_core import service
from mnemo_core.errors import DatabaseUnavailable
from mnemo_core.settings import Settings

log = mlog.get(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_bind_error(settings: Settings) -> str | None:
    """No keys on a non-loopback address lets anyone in: refuse unless told otherwise."""
    if settings.api_key_list or settings.allow_insecure or is_loopback(settings.api_host):
        return None
    return (
        f"refusing to listen on {settings.api_host} without API keys: set MNEMO_API_KEYS, "
        "or MNEMO_ALLOW_INSECURE=1 if something else guards this port"
    )


class LoggedAlready(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application": Starlette re-raises a 500's exception
    after ``errors._unexpected`` answered it and logged its traceback with the request id,
    so uvicorn's line would be the same traceback a second time."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage().strip() != "Exception in ASGI application"


def migrate_or_stop(settings: Settings) -> bool:
    """Wait for the database and migrate before serving. SIGTERM or Ctrl-C while waiting
    stops at once (False): uvicorn's own handlers would wait for its startup to finish."""

    async def run() -> bool:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await migrate_when_ready(settings)
            return True
        except asyncio.CancelledError:
            log.info("stopped_before_start")
            return False
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> None:
    # Not service.run_main as the workers: uvicorn.run makes its own event loop (uvloop, a
    # third of the API's CPU per request) and handles SIGTERM itself once serving; only the
    # wait for the database before it needs our own loop and signal handling.
    p = argparse.ArgumentParser(prog="mnemo-api", description=__doc__)
    p.add_argument("--host", help="listen address (MNEMO_API_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (MNEMO_API_PORT, default 8000)")
    args = p.parse_args(argv)
    overrides = {k: v for k, v in {"api_host": args.host, "api_port": args.port}.items() if v}
    settings = service.start("api", **overrides)
    problem = insecure_bind_error(settings)
    if problem:
        log.error("insecure_bind_refused", host=settings.api_host, error=problem)
        sys.exit(2)
    try:
        if not migrate_or_stop(settings):
            return
    except DatabaseUnavailable as exc:
        log.error("database_unavailable_at_start", error=str(exc))
        sys.exit(1)
    logging.getLogger("uvicorn.error").addFilter(LoggedAlready())
    uvicorn.run(
        create_app(settings, run_migrations=False),
        host=settings.api_host,
        port=settings.api_port,
        http=JsonErrorsProtocol,  # httptools; JSON refusals, a bounded request head
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
