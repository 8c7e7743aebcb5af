"""From a parsed file to the rows the indexer writes: chunks (with the text to embed and
the lexical document) and graph edges (with resolution candidates). Pure functions.

A file's rows cross from the parser process to the indexer column by column
(:class:`FileRows`): lists of strings and ints unpickle several times faster than an
object per chunk and per edge, which was most of the indexer main process's time
(bench/README.md, change 19)."""

from __future__ import annotations

import hashlib
import itertools
import posixpath
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from mnemo_core.text import chunk_embed_text, chunk_lexemes, module_path
from mnemo_indexer.chunking import ParsedFile, ParseError
from mnemo_indexer.chunking.names import file_qualified_name

NON_SYMBOL_KINDS = frozenset({"module", "section", "window"})
SELF_NAMES = frozenset({"self", "this", "cls", "@", "$this", "Self"})
# Languages whose names come from a declared package or namespace, not the file's path: a
# call there is looked up in the caller's enclosing types and namespaces.
NAMESPACED = frozenset({"java", "csharp", "php"})
SEP = "\x1f"  # joins list values inside one text[] element for unnest()


class EdgeRow(NamedTuple):
    source: str
    relationship: str
    external: str
    candidates: tuple[str, ...]
    bare: str | None
    line: int | None


class ChunkColumns(NamedTuple):
    """Chunks column by column, one element a chunk. The text to embed is not kept, only its
    hash: the embedder builds it again from the stored chunk (``chunk_embed_text``)."""

    kind: list[str]
    name: list[str]
    qualified_name: list[str]
    parent_qualified_name: list[str | None]
    signature: list[str]
    docstring: list[str]
    start_line: list[int]
    end_line: list[int]
    content: list[str]
    calls: list[str]  # each chunk's callees joined by SEP
    complexity: list[int]
    content_hash: list[str]
    embed_hash: list[str]
    lexemes: list[str]  # the lexical document, a tsvector literal

    @classmethod
    def concat(cls, parts: Iterable[ChunkColumns]) -> ChunkColumns:
        """The chunks of several files, one after the other."""
        return cls(*_concat(parts, len(cls._fields)))


class EdgeColumns(NamedTuple):
    """Edges column by column, one element an edge."""

    source: list[str]
    relationship: list[str]
    external: list[str]
    candidates: list[tuple[str, ...]]
    bare: list[str | None]
    line: list[int | None]

    @classmethod
    def of(cls, edges: list[EdgeRow]) -> EdgeColumns:
        if not edges:
            return cls(*([] for _ in cls._fields))
        return cls(*map(list, zip(*edges, strict=True)))

    @classmethod
    def concat(cls, parts: Iterable[EdgeColumns]) -> EdgeColumns:
        return cls(*_concat(parts, len(cls._fields)))


def packed(columns: Sequence[Sequence[str]]) -> tuple[str, list[str]]:
    """Columns of strings as one text each, and the separator they are cut at: each value
    after the separator, so ``(string_to_array(text, separator))[2:]`` gives the column
    back, empty strings included. The separator is ``\x1e`` unless a value holds it, then
    ``\x1e`` and random hex digits, until none does (it has no prefix that is also its
    suffix, so it cannot match across a value's end either).

    asyncpg checks each element of a list parameter against the ``Iterable`` and ``Sized``
    ABCs (is it a nested array?), a Python-level call each: a quarter of the indexer main
    process's time went there for the ~1.1 million strings of the stdlib's chunks and edges
    (bench/README.md, change 28). A text parameter is one value."""
    sep = "\x1e"
    while True:
        texts = [sep + sep.join(c) if c else "" for c in columns]
        if all(t.count(sep) == len(c) for t, c in zip(texts, columns, strict=True)):
            return sep, texts
        sep = "\x1e" + secrets.token_hex(8)


def _concat(parts: Iterable[tuple[list[Any], ...]], width: int) -> list[list[Any]]:
    """Column-wise concatenation of tables that each hold ``width`` column lists."""
    parts = list(parts)
    return [list(itertools.chain.from_iterable(p[k] for p in parts)) for k in range(width)]


@dataclass(frozen=True, slots=True)
class FileRows:
    """One parsed file as the indexer writes it."""

    language: str
    imports: tuple[str, ...]
    chunks: ChunkColumns
    edges: EdgeColumns

    @property
    def n_chunks(self) -> int:
        return len(self.chunks.kind)

    @property
    def n_symbols(self) -> int:
        return sum(1 for k in self.chunks.kind if k not in NON_SYMBOL_KINDS)

    @property
    def n_edges(self) -> int:
        return len(self.edges.source)


#: The longest name a chunk or an edge end may have, in UTF-8 bytes. PostgreSQL's b-tree
#: entries hold at most 2,704 bytes, and names are keys: a chunk's (file, qualified name),
#: an edge's (file, source, relationship, external). A longer one failed the write of every
#: file in its message, five times over; it now fails its own file, saying why.
MAX_NAME_BYTES = 1024


def _check_names(names: Iterable[str]) -> None:
    for name in names:
        if len(name) * 4 <= MAX_NAME_BYTES:  # short enough in any encoding: most names
            continue
        size = len(name.encode("utf-8", "surrogatepass"))
        if size > MAX_NAME_BYTES:
            raise ParseError(
                f"a name of {size} bytes ({name[:40]}…): at most {MAX_NAME_BYTES} can be "
                "indexed (generated or deeply nested code?)"
            )


def file_rows(parsed: ParsedFile) -> FileRows:
    chunks = chunk_columns(parsed)
    edges = EdgeColumns.of(edge_rows(parsed))
    _check_names(itertools.chain(chunks.qualified_name, chunks.name, edges.source, edges.external))
    return FileRows(parsed.language, parsed.imports, chunks, edges)


def base_name(qualified_name: str) -> str:
    """``a.B.f@2`` -> ``a.B.f``: pieces of a split unit act as the unit."""
    return qualified_name.split("@", 1)[0]


def chunk_columns(parsed: ParsedFile) -> ChunkColumns:
    cs = parsed.chunks
    embed_hashes, lexemes = [], []
    for c in cs:
        text = chunk_embed_text(c.qualified_name, c.signature, c.docstring, c.content)
        embed_hashes.append(hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())
        lexemes.append(
            chunk_lexemes(parsed.path, c.qualified_name, c.signature, c.docstring, c.content)
        )
    return ChunkColumns(
        [c.kind for c in cs],
        [c.name for c in cs],
        [c.qualified_name for c in cs],
        [c.parent_qualified_name for c in cs],
        [c.signature for c in cs],
        [c.docstring for c in cs],
        [c.start_line for c in cs],
        [c.end_line for c in cs],
        [c.content for c in cs],
        [SEP.join(c.calls) for c in cs],
        [c.complexity for c in cs],
        [c.content_hash for c in cs],
        embed_hashes,
        lexemes,
    )


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


def _unsuffixed(name: str) -> str:
    """``a.Point#2`` -> ``a.Point``: a repeated definition's (a Rust ``impl`` block's)
    members are named after the type itself."""
    head, sep, n = name.rpartition("#")
    return head if sep and n.isdigit() else name


def enclosing_scopes(qualified_name: str) -> tuple[str, ...]:
    """``com.ex.Bank.transfer`` -> ``com.ex.Bank``, ``com.ex``, ``com``: innermost first."""
    parts = base_name(qualified_name).split(".")
    return tuple(".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1))


def call_candidates(
    callee: str,
    *,
    module: str,
    parent: str | None,
    imports: tuple[str, ...],
    language: str,
    scopes: tuple[str, ...] = (),
    aliases: dict[str, str] | None = None,
    caller: str | None = None,
    receiver: str = "",
) -> tuple[tuple[str, ...], str | None]:
    """Where a call might land, best first, and the bare name for a last-resort unique match.

    ``self.f`` -> the enclosing class's ``f``; ``f`` -> the module's ``f``, an imported ``f``
    (or the ``f`` inside an imported module ``f``, first) or the class's ``f`` (first for
    languages with implicit ``this``); ``m.f`` -> through an import of ``m``, or ``m.f``
    itself, or a nested name of the module. In Java, C# and PHP (``scopes``: the caller's
    enclosing types and namespaces) ``f`` and ``K.f`` are looked up in each of them, then
    in each imported namespace. In Python only an imported ``f`` has a last-resort match: a
    name neither defined in the module nor imported is a builtin or a local there, never
    another module's function. A name bound by an import's ``as`` (``aliases``) stands for
    what it imports: ``U.add`` after ``from pkg import util as U`` is ``pkg.util.add``."""
    callee = callee.rstrip("!").replace("::", ".").replace("->", ".")
    parts = [p for p in callee.split(".") if p]
    if not parts:
        return (), None
    if aliases and parts[0] in aliases:
        # What the alias imports first; the rest as usual (`try: import _x as m` / `except
        # ImportError: from . import m` binds one name to either).
        usual, bare = call_candidates(
            callee,
            module=module,
            parent=parent,
            imports=imports,
            language=language,
            scopes=scopes,
            caller=caller,
            receiver=receiver,
        )
        return (".".join([aliases[parts[0]], *parts[1:]]), *usual), bare
    parent = _unsuffixed(parent) if parent else parent
    head, rest = parts[0], parts[1:]
    cands: list[str] = []
    if head.lstrip("@") in SELF_NAMES or head in SELF_NAMES or (receiver and head == receiver):
        if rest and parent:
            cands.append(f"{parent}.{'.'.join(rest)}")
        return tuple(dict.fromkeys(cands)), rest[-1] if len(rest) == 1 else None
    namespaces = [i.removesuffix(".*") for i in imports] if language in NAMESPACED else []
    if not rest:
        own = f"{caller}.{head}" if caller and language == "python" else None  # nested def
        return _bare_candidates(head, module, parent, imports, language, scopes, namespaces, own)
    tail = ".".join(rest)
    for imp in imports:
        if imp == head or imp.endswith("." + head):
            cands.append(f"{imp}.{tail}")
        elif callee.startswith(imp + "."):
            cands.append(callee)
    cands.append(callee)
    if scopes:
        cands += [f"{s}.{callee}" for s in scopes] + [f"{n}.{callee}" for n in namespaces]
    elif module:
        cands.append(f"{module}.{callee}")
    return tuple(dict.fromkeys(cands)), None


def _bare_candidates(
    head: str,
    module: str,
    parent: str | None,
    imports: tuple[str, ...],
    language: str,
    scopes: tuple[str, ...],
    namespaces: list[str],
    own: str | None,
) -> tuple[tuple[str, ...], str | None]:
    local = [f"{module}.{head}"] if module else [head]
    if local[0] in imports:
        local = []  # a module bound by its import (`const f = require('./f')`): below
    # An import named like the call: the symbol itself (`from m import f`), or a module
    # whose same-named export is called (`const compare = require('./compare')`), which
    # wins when it exists.
    via_import = [
        c for i in imports if i == head or i.endswith("." + head) for c in (f"{i}.{head}", i)
    ]
    wildcard = [f"{i.removesuffix('.*')}.{head}" for i in imports if i.endswith(".*")]
    in_class = [f"{parent}.{head}"] if parent else []
    if language == "python":
        cands = ([own] if own else []) + local + via_import + wildcard + in_class
        # Only an imported name may land on another module's symbol (a re-export: `from
        # pkg import f` where pkg's __init__ imports f from pkg.core); any other is a
        # builtin or a local.
        bare = head if via_import or wildcard else None
        return tuple(dict.fromkeys(c for c in cands if c)), bare
    if scopes:
        in_scope = [f"{s}.{head}" for s in scopes]
        cands = in_class + in_scope + via_import + [f"{n}.{head}" for n in namespaces]
    else:
        cands = in_class + local + via_import + wildcard
    return tuple(dict.fromkeys(c for c in cands if c)), head


def edge_rows(parsed: ParsedFile) -> list[EdgeRow]:
    module = file_qualified_name(parsed.path)  # the file in the graph, never empty
    scope = module_path(parsed.path)  # what its top-level names are prefixed with
    imports = tuple(
        dict.fromkeys(c for i in parsed.imports for c in resolve_import(parsed.path, i))
    )
    aliases = {
        name: f"{resolved[0]}.{member}" if member else resolved[0]
        for name, module, member in parsed.aliases
        if (resolved := resolve_import(parsed.path, module))
    }
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
                scopes=enclosing_scopes(source) if parsed.language in NAMESPACED else (),
                aliases=aliases,
                caller=source,
                receiver=c.receiver,
            )
            add(EdgeRow(source, "calls", callee, cands, bare, line))
    return list(edges.values())
