"""/v1/code: index repositories (JSON files or an uploaded archive), search code by meaning
and by name, walk the call graph, list and delete repositories."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, BinaryIO, Literal

import asyncpg
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
)
from starlette.datastructures import FormData, UploadFile

from mnemo_api import idempotent
from mnemo_api.answers import (
    CallPath,
    CodeResults,
    IndexAccepted,
    Repositories,
    SymbolAnswer,
    Traversal,
    documented,
)
from mnemo_api.archive import Limits, Skipped, TooLarge, clean_path, unpack
from mnemo_api.errors import is_json_media_type, not_json, too_deep
from mnemo_api.schemas import Count, SafeStr
from mnemo_api.state import AppState, state
from mnemo_core import code, codesearch, idempotency
from mnemo_core import graph as graphs
from mnemo_core.errors import EmbedderUnavailable, InvalidInput, validation_message
from mnemo_core.queries import Q
from mnemo_core.text import CHUNK_KINDS

router = APIRouter(prefix="/v1/code", tags=["code"])

REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
Repo = Annotated[str, Field(pattern=REPO_PATTERN, description="repository name")]
RepoInPath = Annotated[str, Path(pattern=REPO_PATTERN, description="repository name")]
SymbolInPath = Annotated[SafeStr, Path(max_length=1024, description="qualified name")]
IdempotencyKey = Annotated[str | None, idempotent.header("making a second job")]


class FileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: SafeStr = Field(min_length=1, max_length=1024)
    content: str  # checked with a message naming the file (NUL, UTF-8, size)
    language: SafeStr | None = Field(
        default=None,
        max_length=32,
        description="one of: " + ", ".join(sorted(code.LANGUAGES)) + " (default: detected)",
    )

    @field_validator("language")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v.lower() not in code.LANGUAGES:
            raise ValueError(
                f"unknown language {v!r}; one of {', '.join(sorted(code.LANGUAGES))}"
                " (or leave it out to detect it)"
            )
        return v.lower()


class IndexIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repository: Repo
    files: list[FileIn]
    commit: SafeStr | None = Field(default=None, max_length=200)
    prune: StrictBool = False  # JSON true or false: "yes" or 1 must not remove files


#: Deepest ``strip_components`` accepted (tar has no limit; nobody nests archives deeper).
MAX_STRIP_COMPONENTS = 32


def _form_bool(v: Any) -> Any:
    """A form field's ``true`` or ``false``; pydantic would also take 1, yes, on, t and y,
    and prune removes files."""
    if isinstance(v, str):
        word = v.strip().lower()
        if word not in ("true", "false"):
            raise ValueError("expected true or false")
        return word == "true"
    return v


class ArchiveForm(BaseModel):
    """The form fields of a multipart archive upload (``archive`` is the file)."""

    model_config = ConfigDict(extra="forbid")

    repository: Repo
    commit: SafeStr | None = Field(default=None, max_length=200)
    prune: Annotated[bool, BeforeValidator(_form_bool)] = False
    strip_components: int = Field(
        default=0,
        ge=0,
        le=MAX_STRIP_COMPONENTS,
        description="leading folders removed from every archive path (tar --strip-components)",
    )


def _one_of(value: str | None, known: frozenset[str], what: str) -> str | None:
    """A filter value, lowercased, if it can match anything; else a ValueError listing
    what can (a typo would otherwise be an empty answer)."""
    if value is None:
        return None
    if value.lower() not in known:
        raise ValueError(f"unknown {what} {value!r}; one of {', '.join(sorted(known))}")
    return value.lower()


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    q: SafeStr = Field(min_length=1, max_length=2000)
    repository: Repo | None = None
    language: SafeStr | None = Field(default=None, max_length=32)
    kind: SafeStr | None = Field(default=None, max_length=32)
    path_prefix: SafeStr | None = Field(default=None, max_length=1024)
    mode: Literal["hybrid", "lexical", "vector"] = "hybrid"
    limit: Count = Field(default=10, ge=1, le=100)

    @field_validator("language")
    @classmethod
    def _language(cls, v: str | None) -> str | None:
        return _one_of(v, code.LANGUAGES, "language")

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str | None) -> str | None:
        return _one_of(v, CHUNK_KINDS, "kind")


class TraverseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repository: Repo
    start: SafeStr = Field(min_length=1, max_length=1024)
    direction: Literal["in", "out", "both"] = "out"
    relationship: Literal["calls", "contains", "imports"] | None = None
    max_depth: Count = Field(default=2, ge=1, le=graphs.MAX_DEPTH)


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its $defs inlined (openapi_extra cannot carry $defs)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


def _limits(st: AppState) -> Limits:
    s = st.settings
    return Limits(
        s.max_file_bytes, s.max_archive_expanded_bytes, s.max_archive_entries, s.max_path_chars
    )


def _check_files(body: IndexIn, st: AppState) -> list[code.SourceFile]:
    s = st.settings
    if len(body.files) > s.max_files_per_request:
        raise InvalidInput(
            "body.files",
            f"{len(body.files)} files; at most "
            f"{s.max_files_per_request} per request (MNEMO_MAX_FILES_PER_REQUEST)",
        )
    out, seen = [], set()
    for i, f in enumerate(body.files):
        field = f"body.files.{i}"
        path = clean_path(f.path, field=f"{field}.path", max_chars=s.max_path_chars)
        if path in seen:
            raise InvalidInput(f"{field}.path", f"{path} appears twice")
        seen.add(path)
        try:
            data = f.content.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInput(f"{field}.content", f"{path} is not valid UTF-8") from exc
        if len(data) > s.max_file_bytes:
            raise InvalidInput(
                f"{field}.content",
                f"{path} has {len(data)} bytes; at most "
                f"{s.max_file_bytes} per file (MNEMO_MAX_FILE_BYTES)",
            )
        if b"\x00" in data:
            raise InvalidInput(f"{field}.content", f"{path} contains NUL bytes (binary?)")
        out.append(code.SourceFile(path, data, f.language))
    return out


def _archive_form(form: FormData, limit: int) -> tuple[ArchiveForm, UploadFile]:
    upload = form.get("archive") or form.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidInput("body.archive", "attach the repository as a file field named 'archive'")
    size = upload.size or 0
    if size > limit:
        raise TooLarge("body.archive", f"{size} bytes; at most {limit} (MNEMO_MAX_ARCHIVE_BYTES)")
    # Every other field is the form's: a missing one is "Field required", an unknown one (a
    # typo such as strip_component) is refused as in the JSON body, and an empty one is unset.
    given = [
        (k, v) for k, v in form.multi_items() if isinstance(v, str) and k not in ("archive", "file")
    ]
    fields = dict(given)
    if len(fields) < len(given):  # which one would win is nobody's guess: say so
        twice = next(k for k, _ in given if sum(1 for n, _ in given if n == k) > 1)
        raise InvalidInput(f"body.{twice}", "given more than once")
    try:
        meta = ArchiveForm.model_validate({k: v for k, v in fields.items() if v != ""})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(
            ".".join(["body", *map(str, first["loc"])]), validation_message(first)
        ) from exc
    return meta, upload


def _unpacked(
    archive: BinaryIO, limits: Limits, meta: ArchiveForm, *, keyed: bool
) -> tuple[list[code.SourceFile], list[Skipped], bytes | None]:
    """The archive's files and skipped entries, and, for a request with an idempotency
    key, its fingerprint. Blocking: the archive thread's."""
    files, skipped = unpack(archive, limits, strip_components=meta.strip_components)
    return files, skipped, _archive_fingerprint(meta, files, skipped) if keyed else None


def _archive_fingerprint(
    meta: ArchiveForm, files: list[code.SourceFile], skipped: list[Skipped]
) -> bytes:
    """What identifies an archive upload: its form fields and what it unpacked to (each
    file's path and the SHA-256 of its content, which the upload computes anyway to find
    unchanged files; the skipped entries and why), in path order. Not a hash of the
    archive's bytes: that would be one more pass over up to MNEMO_MAX_ARCHIVE_BYTES, and
    would tell apart archives of the same files made twice (tar and gzip write times,
    member order, zip or tar), as the JSON body's fingerprint does not tell apart key
    order or whitespace. The one cost: a retry after the server changed how it unpacks
    (a new limit, a new rule for skipping) is a 422, and needs a new key."""
    return idempotency.fingerprint(
        {
            "form": meta.model_dump(mode="json"),
            "files": sorted((f.path, f.content_hash) for f in files),
            "skipped": sorted((s.path, s.reason) for s in skipped),
        }
    )


async def _index_archive(
    request: Request, st: AppState, key: idempotent.Key | None, response: Response
) -> dict[str, Any]:
    """The archive part is spooled to a temporary file (on disk past 1 MiB) while it streams
    in; then, one upload at a time per process, it is unpacked from there in the archive
    thread (never a second copy in memory, never a blocked event loop) and stored."""
    limit = st.settings.max_archive_bytes
    async with request.form(max_files=1, max_fields=10, max_part_size=limit) as form:
        meta, upload = _archive_form(form, limit)
        async with st.archive_slot:
            await upload.seek(0)
            files, skipped, fingerprint = await asyncio.get_running_loop().run_in_executor(
                st.archive_thread,
                lambda: _unpacked(upload.file, _limits(st), meta, keyed=key is not None),
            )
            if len(files) > st.settings.max_files_per_request:
                raise InvalidInput(
                    "body.archive",
                    f"{len(files)} files; at most "
                    f"{st.settings.max_files_per_request} (MNEMO_MAX_FILES_PER_REQUEST)",
                )
            keyed = None if key is None or fingerprint is None else (key, fingerprint)
            return await _index(st, meta, files, skipped, keyed, response)


@router.post(
    "/index",
    status_code=202,
    response_model=None,
    responses={
        202: {
            "model": IndexAccepted,
            "description": "Queued: poll the job",
            "headers": idempotent.REPLAYED,
        }
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": _inline_schema(IndexIn)},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["repository", "archive"],
                        "properties": {
                            "repository": {"type": "string", "pattern": REPO_PATTERN},
                            "archive": {"type": "string", "format": "binary"},
                            "commit": {"type": "string"},
                            "prune": {"type": "boolean"},
                            "strip_components": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": MAX_STRIP_COMPONENTS,
                                "default": 0,
                                "description": "leading folders removed from every archive "
                                "path, like tar --strip-components (GitHub archives: 1)",
                            },
                        },
                    }
                },
            },
            "required": True,
        }
    },
)
async def index(
    request: Request,
    response: Response,
    st: AppState = Depends(state),
    idempotency_key: IdempotencyKey = None,  # documented; key_of reads every line of it
) -> dict[str, Any]:
    """Index a repository: a JSON list of files, or a multipart upload of a .tar.gz/.zip
    (field ``archive``; its paths are kept as they are, less ``strip_components`` leading
    folders). Unchanged files (same content) are skipped; with ``prune``, files of the
    repository missing from the request are removed. Poll the job for progress. With an
    ``Idempotency-Key``, a repeat of the request answers as the first one did and makes
    no job."""
    key = idempotent.key_of(request)  # before the body: a bad key is refused unread
    ctype = request.headers.get("content-type", "")
    if ctype.lower().startswith("multipart/form-data"):
        return await _index_archive(request, st, key, response)
    if not is_json_media_type(ctype):
        raise not_json(ctype, accepted="application/json, or multipart/form-data with an archive")
    try:
        raw = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("body", "expected JSON or a multipart archive upload") from exc
    except RecursionError as exc:  # the other routes' parser answers the same
        raise too_deep(exc) from exc
    try:
        body = IndexIn.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(
            ".".join(["body", *map(str, first["loc"])]), validation_message(first)
        ) from exc
    files = _check_files(body, st)
    keyed = None if key is None else (key, idempotency.fingerprint(body.model_dump(mode="json")))
    return await _index(st, body, files, [], keyed, response)


#: Skipped files named in a "no files to index" answer (the rest are counted).
SKIPPED_NAMED = 10


def nothing_to_index(skipped: list[Skipped], *, archive: bool) -> str:
    """Why a request holds no file to index: what it had, what was skipped and why."""
    if not skipped:
        return "no files to index: " + (
            "the archive holds no files" if archive else "the list is empty"
        )
    named = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:SKIPPED_NAMED])
    more = len(skipped) - SKIPPED_NAMED
    tail = f"; and {more} more" if more > 0 else ""
    return f"no files to index: all {len(skipped)} skipped ({named}{tail})"


async def _index(
    st: AppState,
    meta: ArchiveForm | IndexIn,
    files: list[code.SourceFile],
    skipped: list[Skipped],
    keyed: tuple[idempotent.Key, bytes] | None,
    response: Response,
) -> dict[str, Any]:
    """Store the files and queue the job; with ``keyed`` (the request's idempotency key and
    what identifies the request), in the transaction that claims the key, only the first
    time."""
    if not files:
        # Never a job for nothing, and never a prune that would empty the repository.
        archive = isinstance(meta, ArchiveForm)
        raise InvalidInput(
            "body.archive" if archive else "body.files",
            nothing_to_index(skipped, archive=archive),
        )

    async def store(conn: asyncpg.Connection) -> idempotency.Answer:
        acc = await code.index_files(
            conn, meta.repository, files, commit=meta.commit, prune=meta.prune
        )
        accepted = {
            "job_id": str(acc.job_id),
            "repository": meta.repository,
            "files": acc.files,
            "files_changed": acc.changed,
            "files_unchanged": acc.unchanged,
            "files_removed": acc.removed,
            "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
        }
        return idempotency.Answer(202, accepted)

    if keyed is None:
        answer = await st.transaction(store)
    else:
        answer = await idempotent.once(st, *keyed, store, response)
    response.status_code = answer.status
    # In the answer's own order: a replay's comes back from jsonb, its keys sorted by length.
    return IndexAccepted.model_validate(answer.body).model_dump(mode="json")


async def _search(body: SearchIn, st: AppState) -> dict[str, Any]:
    started = time.perf_counter()
    filters = codesearch.Filters(body.repository, body.language, body.kind, body.path_prefix)
    n = max(body.limit * 4, 50)
    if body.repository is not None:
        async with st.acquire() as conn:
            if not await conn.fetchval(Q["repository_exists"], body.repository):
                raise await code.unknown_repository(conn, body.repository)
    notes: list[str] = []
    lex: list[tuple[int, float]] = []
    vec: list[tuple[int, float]] = []
    if body.mode in ("hybrid", "lexical"):
        async with st.acquire() as conn:
            lex = await codesearch.lexical(conn, body.q, filters, n)
    if body.mode in ("hybrid", "vector"):
        try:
            qv = await st.query_embedder.embed(body.q)
        except EmbedderUnavailable as exc:
            if body.mode == "vector":
                raise
            notes.append(f"lexical results only: {exc}")
        else:
            async with st.acquire() as conn:
                vec = await codesearch.vector(
                    conn, qv, st.settings.embedding_model, filters, n, st.settings.search_ef
                )
    fused = codesearch.rrf([[i for i, _ in lex], [i for i, _ in vec]])
    async with st.acquire() as conn:
        results = await codesearch.results(conn, fused, dict(lex), dict(vec), body.limit)
    return {
        "results": results,
        "count": len(results),
        "mode": body.mode,
        "notes": notes,
        "took_ms": round((time.perf_counter() - started) * 1000, 2),
    }


@router.get("/search", response_model=None, responses=documented(CodeResults))
async def search_get(
    q: Annotated[str, Query(min_length=1, max_length=2000)],
    st: AppState = Depends(state),
    repository: Annotated[str | None, Query(pattern=REPO_PATTERN)] = None,
    language: Annotated[str | None, Query(max_length=32)] = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    path_prefix: Annotated[str | None, Query(max_length=1024)] = None,
    mode: Literal["hybrid", "lexical", "vector"] = "hybrid",
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    """Hybrid by default: full-text + trigram over names, signatures, docstrings and split
    identifiers, and cosine similarity of embeddings, fused by reciprocal rank."""
    body = SearchIn(
        q=q,
        repository=repository,
        language=language,
        kind=kind,
        path_prefix=path_prefix,
        mode=mode,
        limit=limit,
    )
    return await _search(body, st)


@router.post("/search", response_model=None, responses=documented(CodeResults))
async def search_post(body: SearchIn, st: AppState = Depends(state)) -> dict[str, Any]:
    return await _search(body, st)


@router.get(
    "/graph/{repository}/symbols/{qualified_name:path}",
    response_model=None,
    responses=documented(SymbolAnswer),
)
async def symbol(
    repository: RepoInPath,
    qualified_name: SymbolInPath,
    st: AppState = Depends(state),
) -> dict[str, Any]:
    """A symbol with its callers and callees (qualified name, path, line)."""
    async with st.acquire() as conn:
        return await graphs.symbol(conn, repository, qualified_name)


@router.post("/graph/traverse", response_model=None, responses=documented(Traversal))
async def traverse(body: TraverseIn, st: AppState = Depends(state)) -> dict[str, Any]:
    """Everything reachable from ``start`` within ``max_depth`` hops."""
    async with st.acquire() as conn:
        return await graphs.traverse(
            conn,
            body.repository,
            body.start,
            direction=body.direction,
            relationship=body.relationship,
            max_depth=body.max_depth,
        )


@router.get("/graph/{repository}/path", response_model=None, responses=documented(CallPath))
async def call_path(
    repository: RepoInPath,
    source: Annotated[SafeStr, Query(alias="from", min_length=1, max_length=1024)],
    target: Annotated[SafeStr, Query(alias="to", min_length=1, max_length=1024)],
    st: AppState = Depends(state),
    max_depth: Annotated[int, Query(ge=1, le=graphs.MAX_DEPTH)] = graphs.MAX_DEPTH,
) -> dict[str, Any]:
    """The shortest chain of resolved calls from ``from`` to ``to`` (``path`` is null when
    there is none within ``max_depth``)."""
    async with st.acquire() as conn:
        path = await graphs.call_path(conn, repository, source, target, max_depth=max_depth)
    return {
        "repository": repository,
        "from": source,
        "to": target,
        "path": path,
        "hops": len(path) - 1 if path else None,
    }


@router.get("/repositories", response_model=None, responses=documented(Repositories))
async def repositories(st: AppState = Depends(state)) -> dict[str, Any]:
    """Files, chunks, symbols, edges, languages, last indexed and embedding coverage."""
    async with st.acquire() as conn:
        return {"repositories": await code.list_repositories(conn)}


@router.delete("/repositories/{name}", status_code=204)
async def delete_repository(name: RepoInPath, st: AppState = Depends(state)) -> Response:
    """Remove a repository and everything of it."""
    await st.transaction(lambda conn: code.delete_repository(conn, name))
    return Response(status_code=204)
