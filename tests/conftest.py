"""Shared fixtures: one embedded PostgreSQL 18 (pgvector + PGMQ) per session, the schema
built once into a template database, and a fresh database per test cloned from it."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import structlog

from mnemo_core import db
from mnemo_core.localpg import LocalPostgres, free_port
from tests.helpers import DIM, TEMPLATE, admin_sql, cloned_database, migrate_now


@contextlib.contextmanager
def _outside_pytest_temp() -> Iterator[Path]:
    """A fresh folder for a PostgreSQL data directory, outside pytest's temporary root.

    That root (``/tmp/pytest-of-<user>``) must be traversable by the server, which runs as
    its own user when the tests run as root (``LocalPostgres`` opens it up). Every pytest
    session that starts closes it again (mode 0700, pytest's own safety check): a second
    session on the machine (another clone's ``make test``) left the servers of the first
    one unable to open their files (PANIC: could not open pg_control)."""
    path = Path(tempfile.mkdtemp(prefix="mnemo-test-pg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pg_home() -> Iterator[Path]:
    """A folder for a test's own PostgreSQL data directory (see ``_outside_pytest_temp``)."""
    with _outside_pytest_temp() as path:
        yield path


@pytest.fixture(scope="session")
def pg() -> Iterator[LocalPostgres]:
    with _outside_pytest_temp() as home:
        server = LocalPostgres(home / "pg", port=free_port(), database="postgres", durable=False)
        server.start()
        admin_sql(server, f"CREATE DATABASE {TEMPLATE}")
        migrate_now(server.dsn(TEMPLATE), DIM)
        yield server
        server.stop()


@pytest.fixture
def dsn(pg: LocalPostgres) -> Iterator[str]:
    """A fresh database with the whole schema, cloned from the template."""
    with cloned_database(pg, "t") as url:
        yield url


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(dsn, application_name="tests", min_size=1, max_size=5)
    yield p
    await p.close()


@pytest.fixture(autouse=True)
def _process_logging_restored() -> Iterator[None]:
    """Put back the process-wide logging state a test changed.

    ``mnemo_core.logging.configure`` is meant to run once, from a service's main(); a test
    that goes through ``service.start`` (``service.run_main``, ``mnemo migrate``) runs it in
    the pytest process. It leaves structlog writing to a ``LogStream`` over the
    ``sys.stderr`` of that moment, which under pytest is that test's capture, closed when
    the test ends: every later line would be written to a closed file, which ``LogStream``
    drops silently. It also replaces the root logger's handlers (closing pytest's), the
    levels of the root and of some library loggers, the except hooks, and binds the
    service's name to the log context. Loggers used while it was in force cached it
    (``cache_logger_on_first_use``): those caches go too."""
    config = structlog.get_config()
    configured = structlog.is_configured()
    context = structlog.contextvars.get_contextvars()
    hooks = (sys.excepthook, threading.excepthook, warnings.showwarning)
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {
        name: lg.level
        for name, lg in {"": root, **logging.root.manager.loggerDict}.items()
        if isinstance(lg, logging.Logger)
    }
    yield
    if configured != structlog.is_configured() or any(
        structlog.get_config()[k] is not v for k, v in config.items()
    ):
        if configured:
            structlog.configure(**config)
        else:
            structlog.reset_defaults()
        _forget_cached_loggers()
    if structlog.contextvars.get_contextvars() != context:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**context)
    sys.excepthook, threading.excepthook, warnings.showwarning = hooks
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    for name, level in levels.items():
        lg = root if name == "" else logging.root.manager.loggerDict.get(name)
        if isinstance(lg, logging.Logger) and lg.level != level:
            lg.setLevel(level)


def _forget_cached_loggers() -> None:
    """Module-level ``mlog.get(__name__)`` proxies bound under a configuration with
    ``cache_logger_on_first_use`` keep it (structlog stores the bound ``bind`` on the proxy):
    remove it, so that they follow the configuration in force again."""
    proxy = type(structlog.get_logger())
    for module in list(sys.modules.values()):
        for value in list(getattr(module, "__dict__", {}).values()):
            if type(value) is proxy:
                vars(value).pop("bind", None)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(__file__).parent / "artifacts"
    path.mkdir(exist_ok=True)
    return path


def pytest_configure(config: pytest.Config) -> None:
    # Tests never reach a model hub; the real model comes from its PyPI package.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
