"""``mnemo index`` and ``mnemo code …``: index a working tree, search it, ask the graph."""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mnemo_cli.client import ApiError, Client, post_once, seg
from mnemo_cli.show import plain, shown

# soft_wrap: lines are never cut by rich (a terminal wraps them; a pipe gets them whole,
# ids and all); tables still fit the width.
console = Console(soft_wrap=True)
err = Console(stderr=True)
FINISHED = ("succeeded", "failed", "cancelled")

# Folders that hold other people's code or build output, never the project's own.
VENDORED = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "vendor",
        "third_party",
        "bower_components",
        ".venv",
        "venv",
        "env",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        "dist",
        "build",
        "target",
        ".next",
        ".cache",
        ".idea",
        ".vscode",
        ".mnemolite",
        "site-packages",
        ".eggs",
    }
)
DEFAULT_MAX_FILE_BYTES = 1024 * 1024
SKIPPED_SHOWN = 20  # skipped files named after an upload (the rest are counted)


def _gitignore_specs(root: Path) -> list[tuple[Path, Any]]:
    import pathspec

    specs = []
    for ignore in root.rglob(".gitignore"):
        if any(part in VENDORED for part in ignore.relative_to(root).parts[:-1]):
            continue
        try:
            lines = ignore.read_text(errors="replace").splitlines()
        except OSError:
            continue
        specs.append((ignore.parent, pathspec.GitIgnoreSpec.from_lines(lines)))
    return specs


def _ignored(path: Path, is_dir: bool, specs: list[tuple[Path, Any]]) -> bool:
    for base, spec in specs:
        try:
            rel = path.relative_to(base).as_posix()
        except ValueError:
            continue
        if spec.match_file(rel + ("/" if is_dir else "")):
            return True
    return False


def walk(root: Path, max_file_bytes: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """The project's text files (honouring .gitignore; skipping vendored folders, links,
    binaries and files over the size limit) and what was skipped with why."""
    specs = _gitignore_specs(root)
    files: list[tuple[str, bytes]] = []
    skipped: list[tuple[str, str]] = []

    def visit(folder: Path) -> Iterator[Path]:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            p = Path(e.path)
            if e.is_symlink():
                # Never followed (it may leave the folder); said, unless .gitignore hides it.
                if not _ignored(p, e.is_dir(), specs):
                    skipped.append((p.relative_to(root).as_posix(), "symbolic link"))
                continue
            if e.is_dir():
                if e.name not in VENDORED and not _ignored(p, True, specs):
                    yield from visit(p)
            elif e.is_file() and not _ignored(p, False, specs):
                yield p

    for p in visit(root):
        rel = p.relative_to(root).as_posix()
        if p.stat().st_size > max_file_bytes:
            skipped.append((rel, f"larger than {max_file_bytes} bytes"))
            continue
        data = p.read_bytes()
        why = _not_text(data)
        if why is None:
            files.append((rel, data))
        else:
            skipped.append((rel, why))
    return files, skipped


def _not_text(data: bytes) -> str | None:
    if b"\x00" in data[:8192]:
        return "binary"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    return None


def tarball(files: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for rel, data in files:
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def watch_index_job(c: Client, job_id: str, *, quiet: bool) -> dict[str, Any]:
    job = c.get(f"/v1/jobs/{seg(job_id)}")
    with Progress(
        TextColumn("[bold]{task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
    ) as bar:
        files = bar.add_task("files parsed", total=None)
        chunks = bar.add_task("chunks embedded", total=None)
        while True:
            d = job.get("detail") or {}
            f, k = d.get("files", {}), d.get("chunks", {})
            bar.update(files, total=f.get("total") or None, completed=f.get("parsed", 0))
            bar.update(chunks, total=k.get("total") or None, completed=k.get("embedded", 0))
            if job["status"] in FINISHED:
                break
            time.sleep(0.5)
            job = c.get(f"/v1/jobs/{seg(job_id)}")
    return job


def cmd_index(args: argparse.Namespace, c: Client) -> int:
    root = Path(args.path).resolve()
    if not root.is_dir():
        raise ApiError(0, f"{root} is not a folder")
    repository = args.repository or root.name
    files, skipped = walk(root, args.max_file_bytes)
    if not files:
        raise ApiError(0, f"no text files to index under {root}")
    data = {"repository": repository, "prune": "true" if args.prune else "false"}
    if args.commit:
        data["commit"] = args.commit
    # One archive, sent again as it is on the retry: the same request for the same key.
    archive = (f"{repository}.tar.gz", tarball(files), "application/gzip")
    body = post_once(c, "/v1/code/index", data=data, files={"archive": archive}, timeout=600)
    if not args.json:
        console.print(
            f"repository [bold]{repository}[/]: {body['files']} files, "
            f"{body['files_changed']} new or changed, {body['files_unchanged']} unchanged, "
            f"{body['files_removed']} removed, {len(skipped) + len(body['skipped'])} skipped; "
            f"job [bold]{body['job_id']}[/]"
        )
        named = [*skipped, *((x["path"], x["reason"]) for x in body["skipped"])]
        for path, why in named[:SKIPPED_SHOWN]:
            console.print(f"  skipped {shown(path)}: {shown(why)}", style="dim")
        if len(named) > SKIPPED_SHOWN:
            console.print(f"  … and {len(named) - SKIPPED_SHOWN} more (--json lists them all)")
    job = watch_index_job(c, body["job_id"], quiet=args.json) if args.watch else None
    if args.json:
        import json

        print(json.dumps({"upload": body, "job": job, "skipped_locally": skipped}, indent=2))
    elif job is not None:
        r = job["result"]
        console.print(
            f"{job['status']}: {r.get('files_indexed', 0)} files indexed, "
            f"{r.get('files_unchanged', 0)} unchanged, {len(r.get('files_failed', []))} failed, "
            f"{r.get('chunks', 0)} chunks, {r.get('symbols', 0)} symbols, {r.get('edges', 0)} edges"
        )
        for f in r.get("files_failed", [])[:20]:
            console.print(f"  failed {shown(f['path'])}: {shown(f['reason'])}", style="red")
    return 1 if job is not None and job["status"] != "succeeded" else 0


def _print_json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=2))


def cmd_search(args: argparse.Namespace, c: Client) -> int:
    params = {
        k: v
        for k, v in {
            "q": args.query,
            "repository": args.repository,
            "language": args.language,
            "kind": args.kind,
            "path_prefix": args.path,
            "mode": args.mode,
            "limit": args.limit,
        }.items()
        if v is not None
    }
    data = c.get("/v1/code/search", params=params)
    if args.json:
        _print_json(data)
        return 0
    for note in data.get("notes", []):
        err.print(note, style="yellow", soft_wrap=True)
    for r in data["results"]:
        console.print(
            f"[bold]{r['scores']['fused']:.4f}[/]  {shown(r['qualified_name'])}  "
            f"[dim]{r['repository']}:{shown(r['path'])}:{r['start_line']}-{r['end_line']}[/]"
        )
        if r["signature"]:
            console.print(f"    {plain(r['signature'])}", markup=False)
    if not data["results"]:
        console.print("no results")
    return 0


def _symbol_rows(title: str, rows: list[dict[str, Any]]) -> Table:
    t = Table(title=title)
    t.add_column("qualified name")
    t.add_column("where")
    for r in rows:
        where = f"{shown(r['path'])}:{r['line']}" if r.get("path") else "(external)"
        t.add_row(shown(r["qualified_name"]), where)
    return t


def cmd_symbol(args: argparse.Namespace, c: Client) -> int:
    data = c.get(f"/v1/code/graph/{seg(args.repository)}/symbols/{seg(args.qualified_name)}")
    if args.json:
        _print_json(data if args.which == "symbol" else data[args.which])
        return 0
    if args.which == "symbol":
        console.print(
            f"{shown(data['kind'])} [bold]{shown(data['qualified_name'])}[/]  "
            f"[dim]{shown(data['path'])}:{data['start_line']}-{data['end_line']}[/]"
        )
        if data["signature"]:
            console.print(f"    {plain(data['signature'])}", markup=False)
    if args.which in ("symbol", "callers"):
        console.print(_symbol_rows(f"callers of {args.qualified_name}", data["callers"]))
    if args.which in ("symbol", "callees"):
        console.print(_symbol_rows(f"callees of {args.qualified_name}", data["callees"]))
    return 0


def cmd_path(args: argparse.Namespace, c: Client) -> int:
    data = c.get(
        f"/v1/code/graph/{seg(args.repository)}/path",
        params={"from": args.source, "to": args.target},
    )
    if args.json:
        _print_json(data)
    elif data["path"] is None:
        console.print("no call path")
    else:
        for step in data["path"]:
            console.print(
                f"{shown(step['qualified_name'])}  [dim]{shown(step['path'])}:{step['line']}[/]"
            )
    return 0


def cmd_repos(args: argparse.Namespace, c: Client) -> int:
    data = c.get("/v1/code/repositories")
    if args.json:
        _print_json(data)
        return 0
    t = Table("repository", "files", "chunks", "symbols", "edges", "embedded", "last indexed")
    for r in data["repositories"]:
        cov = r["embedding_coverage"]
        t.add_row(
            r["name"],
            str(r["files"]),
            str(r["chunks"]),
            str(r["symbols"]),
            str(r["edges"]),
            f"{cov:.0%}" if cov is not None else "-",
            r["last_indexed_at"] or "-",
        )
    console.print(t)
    return 0


def cmd_delete(args: argparse.Namespace, c: Client) -> int:
    c.request("DELETE", f"/v1/code/repositories/{seg(args.repository)}")
    console.print(f"deleted {args.repository}")
    return 0


QUALIFIED_NAME_HELP = (
    "module path and name, as search shows it (pkg.module.Class.method); a short name is "
    "answered with the qualified names it may mean"
)


def register(sub: Any) -> None:
    ix = sub.add_parser("index", help="index a folder as a repository (incremental)")
    ix.add_argument("path")
    ix.add_argument("--repository", help="name (default: the folder's name)")
    ix.add_argument("--watch", action="store_true", help="progress bars until the job ends")
    ix.add_argument("--prune", action="store_true", help="remove files no longer in the folder")
    ix.add_argument("--commit", help="commit id to record")
    ix.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES)
    ix.set_defaults(fn=cmd_index)

    code = sub.add_parser("code", help="search code and its call graph").add_subparsers(
        dest="sub", required=True
    )
    se = code.add_parser("search", help="hybrid search over indexed code")
    se.add_argument("query")
    se.add_argument("--repository")
    se.add_argument("--language")
    se.add_argument("--kind")
    se.add_argument("--path", help="path prefix")
    se.add_argument("--mode", choices=["hybrid", "lexical", "vector"])
    se.add_argument("--limit", type=int, default=10)
    se.set_defaults(fn=cmd_search)
    for which, what in (
        ("symbol", "a symbol with its callers and callees"),
        ("callers", "who calls a symbol"),
        ("callees", "what a symbol calls"),
    ):
        p = code.add_parser(which, help=what)
        p.add_argument("repository", help="a repository's name (mnemo code repos)")
        p.add_argument("qualified_name", help=QUALIFIED_NAME_HELP)
        p.set_defaults(fn=cmd_symbol, which=which)
    pa = code.add_parser("path", help="shortest call path between two symbols")
    pa.add_argument("repository", help="a repository's name (mnemo code repos)")
    pa.add_argument("source", help="the caller's qualified name")
    pa.add_argument("target", help="the callee's qualified name")
    pa.set_defaults(fn=cmd_path)
    code.add_parser("repos", help="indexed repositories").set_defaults(fn=cmd_repos)
    de = code.add_parser("delete", help="remove a repository and everything of it")
    de.add_argument("repository")
    de.set_defaults(fn=cmd_delete)
