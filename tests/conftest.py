"""Shared fixtures: one embedded PostgreSQL 18 (pgvector + PGMQ) per session, the schema
built once into a template database, and a fresh database per test cloned from it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from mnemo_core import db
from mnemo_core.localpg import LocalPostgres, free_port
from tests.helpers import DIM, TEMPLATE, admin_sql, cloned_database, migrate_now


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    server = LocalPostgres(
        tmp_path_factory.mktemp("pg"), port=free_port(), database="postgres", durable=False
    )
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


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(__file__).parent / "artifacts"
    path.mkdir(exist_ok=True)
    return path


def pytest_configure(config: pytest.Config) -> None:
    # Tests never reach a model hub; the real model comes from its PyPI package.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
