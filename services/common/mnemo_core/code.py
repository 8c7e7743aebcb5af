"""Code repositories and files: what the API writes and the embedder reads. Data access
named by intent; the indexer's writes live in mnemo_indexer."""

from __future__ import annotations

import difflib
import hashlib
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from mnemo_core import jobs, queue, resolve
from mnemo_core.errors import InvalidInput, NotFound
from mnemo_core.items import SqlItemStore
from mnemo_core.jobs import FILES_PER_MESSAGE
from mnemo_core.queries import Q
from mnemo_core.text import chunk_embed_text, module_path

INDEX_JOB = "index_repository"
#: The ``language`` hints a file may carry: the indexer's grammars plus markdown and text
#: (mnemo_indexer.chunking.SUPPORTED_LANGUAGES, which a test keeps equal to this).
LANGUAGES: frozenset[str] = frozenset(
    {
        "c",
        "cpp",
        "csharp",
        "go",
        "java",
        "javascript",
        "markdown",
        "php",
        "python",
        "ruby",
        "rust",
        "text",
        "tsx",
        "typescript",
    }
)


#: Content bytes per ``upsert_files`` statement: a big upload is written in several
#: statements of one transaction, never as one message holding every file at once.
UPSERT_BATCH_BYTES = 4 * 1024 * 1024
#: Content bytes per ``index`` message (besides at most FILES_PER_MESSAGE files; a bigger
#: file goes alone). Parsing and writing a message take time in proportion to its bytes:
#: even messages keep the parser and the database busy together, where a 1 MB message
#: among 30 KB ones left one waiting for the other (bench/README.md, change 21).
MESSAGE_BYTES = 192 * 1024


@dataclass(frozen=True)
class SourceFile:
    """A file to index. ``data`` is its UTF-8 content, kept as bytes: an archive's files are
    never also held decoded (``of_text`` builds one from a JSON upload's string)."""

    path: str
    data: bytes
    language: str | None = None
    content_hash: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "content_hash", hashlib.sha256(self.data).hexdigest())

    @classmethod
    def of_text(cls, path: str, content: str, language: str | None = None) -> SourceFile:
        return cls(path, content.encode("utf-8"), language)

    @property
    def content(self) -> str:
        return self.data.decode("utf-8")


def _batches(sizes: Sequence[int], max_bytes: int, max_items: int | None = None) -> Iterator[slice]:
    """Consecutive runs of items holding at most ``max_bytes`` (or one item bigger than
    that) and at most ``max_items`` items, as slices of ``sizes``."""
    start, size = 0, 0
    for i, n in enumerate(sizes):
        full = max_items is not None and i - start == max_items
        if i > start and (full or size + n > max_bytes):
            yield slice(start, i)
            start, size = i, 0
        size += n
    if start < len(sizes):
        yield slice(start, len(sizes))


@dataclass(frozen=True)
class IndexAccepted:
    job_id: uuid.UUID
    files: int
    changed: int
    unchanged: int
    removed: int


def _add(leaving: Counter[uuid.UUID], per_job: Iterable[asyncpg.Record]) -> None:
    for r in per_job:
        leaving[r["job_id"]] += r["n"]


async def _settle(conn: asyncpg.Connection, leaving: Counter[uuid.UUID]) -> None:
    """Items deleted or superseded while pending leave their jobs' totals (so those jobs can
    finish). Last, after the rows, and in job order: the workers lock the rows they write
    before their jobs, and the other order deadlocked against an embedder."""
    for job_id in sorted(leaving):
        await jobs.progress(conn, job_id, total=-leaving[job_id])


async def _store_and_queue(
    conn: asyncpg.Connection, repository: str, changed: Sequence[SourceFile], job_id: uuid.UUID
) -> None:
    """Upsert the changed files as pending for ``job_id`` (a few MiB a statement) and queue
    their ids on ``index``."""
    sizes = [len(f.data) for f in changed]
    size_of = dict(zip((f.path for f in changed), sizes, strict=True))
    ids: list[str] = []
    id_sizes: list[int] = []  # the size of each id's file, for cutting the messages
    for run in _batches(sizes, UPSERT_BATCH_BYTES):
        batch = changed[run]
        rows = await conn.fetch(
            Q["upsert_files"],
            repository,
            [f.path for f in batch],
            [module_path(f.path) for f in batch],
            [f.language for f in batch],
            [f.content for f in batch],  # decoded one batch at a time
            [f.content_hash for f in batch],
            sizes[run],
            job_id,
        )
        ids += [str(r["id"]) for r in rows]
        id_sizes += [size_of[r["path"]] for r in rows]
    await queue.send_many(
        conn,
        queue.INDEX,
        [
            {"v": 1, "job_id": str(job_id), "kind": "file", "ids": ids[run]}
            for run in _batches(id_sizes, MESSAGE_BYTES, FILES_PER_MESSAGE)
        ],
    )


async def index_files(
    conn: asyncpg.Connection,
    repository: str,
    files: Sequence[SourceFile],
    *,
    commit: str | None,
    prune: bool,
) -> IndexAccepted:
    """Store new and changed files and queue them for the indexer, in the caller's
    transaction. Unchanged files (same content hash, already indexed) cost nothing. An
    empty ``files`` is refused: it would make a job for nothing, or with ``prune`` empty the
    repository (``delete_repository`` does that on purpose)."""
    if not files:
        raise InvalidInput("files", "no files to index")
    for i, f in enumerate(files):
        if b"\x00" in f.data:
            raise InvalidInput(f"files.{i}.content", f"{f.path} contains NUL bytes (binary?)")
    # The repository's lock before its row, as every writer takes them: the indexer holds
    # the lock when it stamps the row, and the other order deadlocked against it.
    await conn.execute(Q["lock_repository"], repository)
    await conn.execute(Q["upsert_repository"], repository, commit, None)
    existing = {r["path"]: r for r in await conn.fetch(Q["files_of_repository"], repository)}
    leaving: Counter[uuid.UUID] = Counter()
    changed: list[SourceFile] = []
    for f in files:
        old = existing.get(f.path)
        if old is None or old["content_hash"] != f.content_hash or old["status"] != "indexed":
            changed.append(f)
            if old is not None and old["status"] == "pending" and old["job_id"] is not None:
                # Superseded: this file leaves the job that was going to parse it.
                leaving[old["job_id"]] += 1
    unchanged = len(files) - len(changed)
    removed: set[int] = set()
    if prune:
        keep = {f.path for f in files}
        removed = {r["id"] for p, r in existing.items() if p not in keep}
    job_id = await jobs.create(
        conn,
        INDEX_JOB,
        len(changed),
        {"repository": repository, "commit": commit, "files": len(files), "prune": prune},
    )
    await conn.execute(
        Q["set_job_result"],
        job_id,
        {
            "files_total": len(files),
            "files_changed": len(changed),
            "files_unchanged": unchanged,
            "files_removed": len(removed),
            "files_indexed": 0,
            "files_failed": [],
            "chunks": 0,
            "symbols": 0,
            "edges": 0,
        },
    )
    if removed:
        await _remove_files(conn, [r for r in existing.values() if r["id"] in removed], leaving)
    if changed:
        await _store_and_queue(conn, repository, changed, job_id)
    elif removed:
        await resolve.resolve_repository(conn, repository)
    await _settle(conn, leaving)
    await conn.execute(Q["upsert_repository"], repository, commit, job_id)
    return IndexAccepted(job_id, len(files), len(changed), unchanged, len(removed))


async def _remove_files(
    conn: asyncpg.Connection, rows: list[asyncpg.Record], leaving: Counter[uuid.UUID]
) -> None:
    """Delete files (locked ``files_of_repository`` rows), noting in ``leaving`` what of
    theirs was still pending: the files themselves and their chunks."""
    for r in rows:
        if r["status"] == "pending" and r["job_id"] is not None:
            leaving[r["job_id"]] += 1
    ids = [r["id"] for r in rows]
    _add(leaving, await conn.fetch(Q["clear_file_rows"], ids))
    await conn.fetch(Q["delete_files"], ids)


async def unknown_repository(conn: asyncpg.Connection, name: str) -> NotFound:
    """The 404 of a name no repository has, with up to 5 names of repositories that are
    close to it (a typo: ``mnemo`` for ``mnemo-lite``), by difflib's similarity ratio."""
    names = [r["name"] for r in await conn.fetch(Q["repository_names"])]
    return NotFound("repository", name, suggestions=difflib.get_close_matches(name, names, n=5))


async def delete_repository(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(Q["lock_repository"], name)
    leaving: Counter[uuid.UUID] = Counter()
    _add(leaving, await conn.fetch(Q["pending_files_of_repository"], name))
    _add(leaving, await conn.fetch(Q["clear_repository_chunks"], name))
    if await conn.fetchval(Q["delete_repository"], name) is None:
        raise await unknown_repository(conn, name)
    # Jobs that still had work here end cancelled, saying why, not "succeeded" with files
    # indexed into a repository that is gone.
    for job_id in sorted(leaving):
        await conn.execute(Q["cancel_job_because"], job_id, f"repository {name!r} was deleted")
    await _settle(conn, leaving)


async def list_repositories(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    out = []
    for r in await conn.fetch(Q["list_repositories"]):
        out.append(
            {
                "name": r["name"],
                "files": r["files"],
                "files_failed": r["files_failed"],
                "chunks": r["chunks"],
                "symbols": r["symbols"],
                "edges": r["edges"],
                "languages": r["languages"],
                "embedding_coverage": round(r["embedded"] / r["chunks"], 4)
                if r["chunks"]
                else None,
                "last_indexed_at": r["last_indexed_at"].isoformat()
                if r["last_indexed_at"]
                else None,
                "last_commit": r["last_commit"],
                "last_job_id": str(r["last_job_id"]) if r["last_job_id"] else None,
                "created_at": r["created_at"].isoformat(),
            }
        )
    return out


async def job_detail(conn: asyncpg.Connection, job_id: uuid.UUID) -> dict[str, Any]:
    """Files parsed / total and chunks embedded / total of an index job, counted live."""
    files: dict[str, int] = {}
    chunks: dict[str, int] = {}
    for r in await conn.fetch(Q["index_job_detail"], job_id):
        (files if r["item"] == "file" else chunks)[r["status"]] = r["n"]
    return {
        "files": {
            "parsed": files.get("indexed", 0) + files.get("failed", 0),
            "failed": files.get("failed", 0),
            "total": sum(files.values()),
        },
        "chunks": {
            "embedded": chunks.get("done", 0),
            "failed": chunks.get("failed", 0),
            "total": sum(chunks.values()),
        },
    }


class ChunkStore(SqlItemStore):
    """The embedder's view of code chunks (keyed by bigint)."""

    kind = "chunk"
    load_query = "chunks_to_embed"
    store_query = "store_chunk_embeddings"
    settle_query = "settle_chunks"

    def keys(self, ids: list[str]) -> list[Any]:
        return [int(i) for i in ids]

    def text(self, row: asyncpg.Record) -> str | None:
        return chunk_embed_text(
            row["qualified_name"], row["signature"], row["docstring"], row["content"]
        )
