"""Value types produced by the chunker.

Everything here is immutable and free of tree-sitter objects so results can be
pickled, cached, compared and handed across process boundaries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Every value ``Chunk.kind`` can take: defined where the API, which filters on it, sees it.
from mnemo_core.text import CHUNK_KINDS as CHUNK_KINDS

#: Kinds whose direct function children are methods.
CLASS_LIKE_KINDS: frozenset[str] = frozenset(
    {"class", "struct", "interface", "trait", "impl", "enum"}
)

#: Kinds that only group other units (their children are not methods).
SCOPE_KINDS: frozenset[str] = frozenset({"module", "namespace"})

#: Separator between a qualified name and the index of an additional piece.
PIECE_SEPARATOR = "@"
#: Separator between a qualified name and the occurrence number of a duplicate.
DUPLICATE_SEPARATOR = "#"


class ParseError(ValueError):
    """The content cannot be chunked at all (binary data, unsupported type).

    Ordinary syntax errors never raise this: the parser recovers and returns
    chunks for whatever did parse.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Chunk:
    """One retrievable unit of a file: a definition, a section or a window."""

    kind: str
    name: str
    qualified_name: str
    signature: str
    docstring: str
    start_line: int
    end_line: int
    content: str
    calls: tuple[str, ...]
    complexity: int
    content_hash: str
    parent_qualified_name: str | None
    #: Line of the first call of each of ``calls`` (same order).
    call_lines: tuple[int, ...] = ()
    #: The name a method's receiver is bound to (Go's ``s`` in ``func (s *Server) f()``).
    receiver: str = ""

    @property
    def line_count(self) -> int:
        return self.end_line - self.start_line + 1


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """The result of chunking one file."""

    path: str
    language: str
    imports: tuple[str, ...]
    chunks: tuple[Chunk, ...]
    content_hash: str
    # Names imports bind (Python's ``as``; JavaScript's ``{ b }``, ``* as x``): each with
    # the module as written and the member it names ("" for the module itself).
    aliases: tuple[tuple[str, str, str], ...] = ()


def sha256_hex(text: str) -> str:
    """Hex SHA-256 of ``text`` encoded as UTF-8 (lone surrogates kept)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def make_chunk(
    *,
    kind: str,
    name: str,
    qualified_name: str,
    start_line: int,
    end_line: int,
    content: str,
    signature: str = "",
    docstring: str = "",
    calls: tuple[str, ...] = (),
    call_lines: tuple[int, ...] = (),
    complexity: int = 1,
    parent_qualified_name: str | None = None,
    receiver: str = "",
) -> Chunk:
    """Build a :class:`Chunk`, computing its content hash."""
    return Chunk(
        kind=kind,
        name=name,
        qualified_name=qualified_name,
        signature=signature,
        docstring=docstring,
        start_line=start_line,
        end_line=end_line,
        content=content,
        calls=calls,
        complexity=complexity,
        content_hash=sha256_hex(content),
        parent_qualified_name=parent_qualified_name,
        call_lines=call_lines,
        receiver=receiver,
    )


def dedupe(items: list[str]) -> tuple[str, ...]:
    """Drop repeated strings, keeping the first occurrence's position."""
    return tuple(dict.fromkeys(items))


def dedupe_calls(calls: list[tuple[int, str]]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``(line, callee)`` pairs in document order -> each callee once, with the line of its
    first call."""
    first: dict[str, int] = {}
    for line, callee in calls:
        first.setdefault(callee, line)
    return tuple(first), tuple(first.values())


class QualifiedNames:
    """Hands out unique qualified names within one file.

    The first definition of a name keeps it; later definitions with the same
    name (overloads, property setters, redefinitions in ``if`` branches) get
    ``#2``, ``#3`` and so on, in document order.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def claim(self, name: str) -> str:
        count = self._seen.get(name, 0) + 1
        self._seen[name] = count
        if count == 1:
            return name
        unique = f"{name}{DUPLICATE_SEPARATOR}{count}"
        while unique in self._seen:
            count += 1
            unique = f"{name}{DUPLICATE_SEPARATOR}{count}"
        self._seen[name] = count
        self._seen[unique] = 1
        return unique


def piece_name(qualified_name: str, index: int) -> str:
    """Qualified name of the ``index``-th (0-based) piece of a split unit."""
    return qualified_name if index == 0 else f"{qualified_name}{PIECE_SEPARATOR}{index + 1}"
