"""Apply the append-only migrations in ``db/`` once, under an advisory lock.

One path for every deployment: the local runner, the API at start-up and the
container stack's one-shot ``migrate`` service all call :func:`migrate`.
PGMQ is installed first from the SQL bundled in the ``pgmq`` package (unless a
``pgmq`` schema already exists, e.g. from ``CREATE EXTENSION pgmq``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg

from mnemo_core import logging as mlog
from mnemo_core.errors import MigrationError

LOCK_KEY = 0x4D4E454D4F  # "MNEMO": serializes concurrent migrators
DIM_PLACEHOLDER = "{{EMBEDDING_DIM}}"

log = mlog.get(__name__)

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    root = resources.files("mnemo_db").joinpath("migrations")
    found = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            found.append(Migration(version, rest.removesuffix(".sql"), entry.read_text("utf-8")))
    return found


def _pgmq_sql() -> tuple[str, str]:
    from pgmq.install import get_embedded_install_sql, get_embedded_sql_version

    return get_embedded_sql_version(), get_embedded_install_sql()


async def _install_pgmq(conn: asyncpg.Connection) -> None:
    if await conn.fetchval("SELECT to_regnamespace('pgmq') IS NOT NULL"):
        return
    version, sql = _pgmq_sql()
    async with conn.transaction():
        await conn.execute(sql)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            "pgmq",
            f"pgmq {version} (bundled SQL)",
            hashlib.sha256(sql.encode()).hexdigest(),
        )
    log.info("pgmq_installed", version=version)


async def _check_dimension(conn: asyncpg.Connection, dim: int) -> None:
    recorded = await conn.fetchval("SELECT value FROM mnemo_settings WHERE key = 'embedding_dim'")
    if recorded is not None and int(recorded) != dim:
        raise MigrationError(
            f"this database stores {recorded}-dimensional vectors but "
            f"MNEMO_EMBEDDING_DIM is {dim}; "
            "use the model the database was built with, or a new database"
        )


async def migrate(conn: asyncpg.Connection, *, embedding_dim: int) -> list[str]:
    """Bring the schema up to date; returns the versions applied now."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_BOOTSTRAP)
        await _install_pgmq(conn)
        done = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for m in available():
            if m.version in done:
                if done[m.version] != m.checksum:
                    raise MigrationError(
                        f"migration {m.version}_{m.name} was changed after it was applied; "
                        "migrations are append-only: add a new one instead"
                    )
                continue
            sql = m.sql.replace(DIM_PLACEHOLDER, str(int(embedding_dim)))
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
                if DIM_PLACEHOLDER in m.sql:
                    await conn.execute(
                        "INSERT INTO mnemo_settings (key, value) VALUES ('embedding_dim', $1)"
                        " ON CONFLICT (key) DO NOTHING",
                        str(embedding_dim),
                    )
            applied_now.append(m.version)
            log.info("migration_applied", version=m.version, name=m.name)
        await _check_dimension(conn, embedding_dim)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return applied_now


async def pending(conn: asyncpg.Connection) -> list[str]:
    """Versions not applied yet (what /ready checks)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return [m.version for m in available()]
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [m.version for m in available() if m.version not in done]
