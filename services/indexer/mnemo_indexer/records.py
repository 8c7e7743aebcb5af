"""From a parsed file to the rows the indexer writes: chunks (with the text to embed and
the lexical document) and graph edges (with resolution candidates). Pure functions."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass

from mnemo_core.text import chunk_embed_text, chunk_search_text, module_path
from mnemo_indexer.chunking import Chunk, ParsedFile
from mnemo_indexer.chunking.names import file_qualified_name

NON_SYMBOL_KINDS = frozenset({"module", "section", "window"})
SELF_NAMES = frozenset({"self", "this", "cls", "@"})
SEP = "\x1f"  # joins list values inside one text[] element for unnest()


@dataclass(frozen=True)
class ChunkRow:
    # The text to embed is not kept, only its hash: the embedder builds it again from the
    # stored chunk (``chunk_embed_text``), and a ChunkRow crosses from the parser process
    # (a quarter of what it pickled was that text: bench/README.md, change 16).
    chunk: Chunk
    embed_hash: str
    search_text: str

    @property
    def is_symbol(self) -> bool:
        return self.chunk.kind not in NON_SYMBOL_KINDS


@dataclass(frozen=True)
class EdgeRow:
    source: str
    relationship: str
    external: str
    candidates: tuple[str, ...]
    bare: str | None
    line: int | None


def base_name(qualified_name: str) -> str:
    """``a.B.f@2`` -> ``a.B.f``: pieces of a split unit act as the unit."""
    return qualified_name.split("@", 1)[0]


def chunk_rows(parsed: ParsedFile) -> list[ChunkRow]:
    out = []
    for c in parsed.chunks:
        text = chunk_embed_text(c.qualified_name, c.signature, c.docstring, c.content)
        out.append(
            ChunkRow(
                c,
                hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
                chunk_search_text(
                    parsed.path, c.qualified_name, c.signature, c.docstring, c.content
                ),
            )
        )
    return out


def resolve_import(path: str, imported: str) -> tuple[str, ...]:
    """Candidates for an import as written: relative paths (``./util``, ``../x``) become
    module paths from the importing file's folder; dotted names stand as they are."""
    if imported.startswith(("./", "../")):
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), imported))
        mod = module_path(joined if "." in posixpath.basename(joined) else joined + ".x")
        return (mod,) if mod and not mod.startswith("..") else ()
    name = imported.replace("::", ".").replace("/", ".").replace("\\", ".")
    name = name.removesuffix(".*").strip(".")
    return (name,) if name else ()


def call_candidates(
    callee: str, *, module: str, parent: str | None, imports: tuple[str, ...], language: str
) -> tuple[tuple[str, ...], str | None]:
    """Where a call might land, best first, and the bare name for a last-resort unique match.

    ``self.f`` -> the enclosing class's ``f``; ``f`` -> the module's ``f``, an imported ``f``
    (or the ``f`` inside an imported module ``f``, first) or the class's ``f`` (first for
    languages with implicit ``this``); ``m.f`` -> through an import of ``m``, or ``m.f``
    itself, or a nested name of the module."""
    callee = callee.rstrip("!").replace("::", ".").replace("->", ".")
    parts = [p for p in callee.split(".") if p]
    if not parts:
        return (), None
    head, rest = parts[0], parts[1:]
    cands: list[str] = []
    if head.lstrip("@") in SELF_NAMES or head in SELF_NAMES:
        if rest and parent:
            cands.append(f"{parent}.{'.'.join(rest)}")
        return tuple(dict.fromkeys(cands)), rest[-1] if len(rest) == 1 else None
    if not rest:
        local = [f"{module}.{head}"] if module else [head]
        # An import named like the call: the symbol itself (`from m import f`), or a module
        # whose same-named export is called (`const compare = require('./compare')`), which
        # wins when it exists.
        via_import = [
            c
            for i in imports
            if i == head or i.endswith("." + head)
            for c in (f"{i}.{head}", i)
        ]
        wildcard = [f"{i.removesuffix('.*')}.{head}" for i in imports if i.endswith(".*")]
        in_class = [f"{parent}.{head}"] if parent else []
        if language == "python":
            cands = local + via_import + wildcard + in_class
        else:
            cands = in_class + local + via_import + wildcard
        return tuple(dict.fromkeys(c for c in cands if c)), head
    tail = ".".join(rest)
    for imp in imports:
        if imp == head or imp.endswith("." + head):
            cands.append(f"{imp}.{tail}")
        elif callee.startswith(imp + "."):
            cands.append(callee)
    cands.append(callee)
    if module:
        cands.append(f"{module}.{callee}")
    return tuple(dict.fromkeys(cands)), None


def edge_rows(parsed: ParsedFile) -> list[EdgeRow]:
    module = file_qualified_name(parsed.path)  # the file in the graph, never empty
    scope = module_path(parsed.path)  # what its top-level names are prefixed with
    imports = tuple(
        dict.fromkeys(c for i in parsed.imports for c in resolve_import(parsed.path, i))
    )
    edges: dict[tuple[str, str, str], EdgeRow] = {}

    def add(e: EdgeRow) -> None:
        edges.setdefault((e.source, e.relationship, e.external), e)

    for imp in imports:
        add(EdgeRow(module, "imports", imp, (imp,), None, None))
    for c in parsed.chunks:
        if c.kind in ("section", "window"):
            continue
        qn = base_name(c.qualified_name)
        if c.kind != "module" and qn == c.qualified_name:
            owner = c.parent_qualified_name or module
            if owner != qn:
                add(EdgeRow(owner, "contains", qn, (qn,), None, c.start_line))
        source = module if c.kind == "module" else qn
        lines = c.call_lines or (c.start_line,) * len(c.calls)
        for callee, line in zip(c.calls, lines, strict=True):
            cands, bare = call_candidates(
                callee,
                module=scope,
                parent=c.parent_qualified_name,
                imports=imports,
                language=parsed.language,
            )
            add(EdgeRow(source, "calls", callee, cands, bare, line))
    return list(edges.values())
