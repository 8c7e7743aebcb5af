"""Acceptance fixtures: a database of its own per test module, real processes, real HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from mnemo_core.localpg import LocalPostgres

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def module_dsn(pg: LocalPostgres) -> Iterator[str]:
    name = f"acc_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg.dsn("postgres"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name} TEMPLATE mnemo_template"))
    yield pg.dsn(name)
    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
