"""From nested units to chunks: oversized-unit splitting and module-level code.

Input is the list of :class:`Unit` built by :mod:`.treesitter` (sorted by
start, nested through ``container``/``children``), output the final chunks in
document order.

* A unit of at most ``max_lines`` lines becomes one chunk holding its full text
  (children included; their calls and decision points are not counted).
* A chunk holds whole lines (indentation kept) when the unit shares its first and last
  lines only with whitespace or a little text (``private``, ``});``).  Otherwise - a
  minified line holding thousands of units - it is cut at the unit's own bytes, so the
  text of all chunks stays linear in the size of the file.
* A larger unit keeps only its *own* lines (those not inside a child unit),
  packed into pieces of at most ``max_lines`` lines.  The first piece carries
  the qualified name, the next ones get ``@2``, ``@3``...  Nothing is truncated.
* Lines outside every top-level unit form runs; a run becomes a ``module``
  chunk (split the same way) unless it holds only imports, comments and blank
  lines.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from .model import Chunk, dedupe_calls, make_chunk, piece_name


@dataclass(slots=True, eq=False)
class Unit:
    """A definition found in the tree (mutable while a file is processed)."""

    node: Any
    kind: str
    parts: list[str]
    start_byte: int
    end_byte: int
    start_line: int
    end_line: int
    start_column: int
    sig_start: int
    container: int | None = None
    children: list[int] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)
    base_qn: str = ""
    qn: str = ""
    logical_parent: int | None = None
    parent_qn: str | None = None
    signature: str = ""
    docstring: str = ""
    leading_comment: str = ""
    calls: list[tuple[int, str]] = field(default_factory=list)
    branches: list[int] = field(default_factory=list)


#: Bytes a unit may share its first or last line with (besides whitespace) and still take
#: the whole line: a ``private `` or ``export `` before it, a ``});`` or a trailing comment
#: after it.  More than that (a minified line) and the chunk is cut at the unit's bytes.
SHARED_LINE_BYTES = 80


class LineIndex:
    """Byte offsets per line of a file (index 0 = line 1): where the line starts, where its
    code starts (first non-blank byte) and ends (past the last one). One pass over it."""

    __slots__ = ("code_ends", "code_starts", "size", "starts")

    def __init__(self, src: bytes) -> None:
        self.starts: list[int] = []
        self.code_starts: list[int] = []
        self.code_ends: list[int] = []
        self.size = len(src)
        pos = 0
        for line in src.split(b"\n"):
            self.starts.append(pos)
            self.code_starts.append(pos + len(line) - len(line.lstrip()))
            self.code_ends.append(pos + len(line.rstrip()))
            pos += len(line) + 1

    def line_end(self, line: int) -> int:
        """Byte offset of the end of 1-based ``line`` (its newline, or the end of the file)."""
        return self.starts[line] - 1 if line < len(self.starts) else self.size


@dataclass(slots=True)
class Layout:
    """File-wide inputs of :func:`build_chunks`."""

    src: bytes
    index: LineIndex
    lines: list[str]
    n_lines: int
    max_lines: int
    file_qn: str  # qualified name of module-level chunks (names.file_qualified_name)
    file_name: str  # their short name
    trivial: bytearray
    module_calls: list[tuple[int, str]]
    module_branches: list[int]
    module_doc: tuple[int, str] | None


_SortKey = tuple[int, int, int]


def _is_blank(lines: list[str], line: int) -> bool:
    return not lines[line - 1].strip()


def _trim(lines: list[str], group: list[int]) -> list[int]:
    lo, hi = 0, len(group)
    while lo < hi and _is_blank(lines, group[lo]):
        lo += 1
    while hi > lo and _is_blank(lines, group[hi - 1]):
        hi -= 1
    return group[lo:hi]


def pack_lines(lines: list[str], numbers: list[int], max_lines: int) -> list[list[int]]:
    """Consecutive groups of at most ``max_lines`` line numbers, blank ends trimmed."""
    groups = []
    for i in range(0, len(numbers), max_lines):
        group = _trim(lines, numbers[i : i + max_lines])
        if group:
            groups.append(group)
    return groups


def _text(lines: list[str], group: list[int]) -> str:
    first, last = group[0], group[-1]
    if last - first + 1 == len(group):
        return "\n".join(lines[first - 1 : last])
    return "\n".join(lines[i - 1] for i in group)


_BLANKS = re.compile(rb"[ \t\r\f\v]*")


def _shares_lines(unit: Unit, layout: Layout) -> tuple[bool, bool]:
    """Whether the unit may take its whole first line, and its whole last line: the code
    it shares them with (indentation and trailing blanks aside) is short."""
    idx = layout.index
    first, last = unit.start_line - 1, unit.end_line - 1
    head = unit.start_byte - idx.code_starts[first] <= SHARED_LINE_BYTES
    code_end = idx.code_ends[last]
    tail = unit.end_byte >= code_end
    if not tail:
        # Bounded: the blanks right after the unit, then the length that is left.
        after = _BLANKS.match(layout.src, unit.end_byte, code_end)
        tail = code_end - (after.end() if after else unit.end_byte) <= SHARED_LINE_BYTES
    return head, tail


def _unit_text(unit: Unit, layout: Layout, group: list[int]) -> str:
    """The text of ``group`` (line numbers of the unit): whole lines, except a first or
    last line of the unit shared with much other code, which is cut at the unit's bytes."""
    head, tail = _shares_lines(unit, layout)
    if head and tail:
        return _text(layout.lines, group)
    idx, src = layout.index, layout.src

    def line_text(line: int) -> str:
        lo, hi = idx.starts[line - 1], idx.line_end(line)
        if line == unit.start_line and not head:
            lo = unit.start_byte
        if line == unit.end_line and not tail:
            hi = min(hi, unit.end_byte)
        if (lo, hi) == (idx.starts[line - 1], idx.line_end(line)):
            return layout.lines[line - 1]
        return src[lo:hi].decode("utf-8", "surrogatepass")

    return "\n".join(line_text(line) for line in group)


def _own_lines(unit: Unit, units: list[Unit]) -> list[int]:
    own: list[int] = []
    cursor = unit.start_line
    for index in unit.children:
        child = units[index]
        if child.start_line > cursor:
            own.extend(range(cursor, min(child.start_line, unit.end_line + 1)))
        cursor = max(cursor, child.end_line + 1)
    own.extend(range(cursor, unit.end_line + 1))
    return own


def _split_by_line(
    groups: list[list[int]],
    calls: list[tuple[int, str]],
    branches: list[int],
    *,
    strict: bool = False,
) -> tuple[list[list[tuple[int, str]]], list[int]]:
    """Distribute calls and decision points over pieces by line.

    With ``strict``, items on lines outside every piece are dropped; otherwise
    they go to the closest piece starting before them.
    """
    starts = [g[0] for g in groups]
    piece_calls: list[list[tuple[int, str]]] = [[] for _ in groups]
    piece_branches = [0] * len(groups)

    def piece_of(line: int) -> int:
        k = bisect_right(starts, line) - 1
        if strict and (k < 0 or line > groups[k][-1]):
            return -1
        return max(k, 0)

    for line, callee in calls:
        k = piece_of(line)
        if k >= 0:
            piece_calls[k].append((line, callee))
    for line in branches:
        k = piece_of(line)
        if k >= 0:
            piece_branches[k] += 1
    return piece_calls, piece_branches


def _receiver(node: Any, src: bytes) -> str:
    """The name a Go method's receiver is bound to (``s`` in ``func (s *Server) f()``)."""
    receiver = node.child_by_field_name("receiver") if node is not None else None
    if receiver is None:
        return ""
    for param in receiver.named_children:
        name = param.child_by_field_name("name")
        if name is not None:
            return src[name.start_byte : name.end_byte].decode("utf-8", "replace")
    return ""


def _emit_unit(unit: Unit, units: list[Unit], layout: Layout, out: list[tuple[_SortKey, Chunk]]):
    first, last = unit.start_line, unit.end_line
    lines = layout.lines
    receiver = _receiver(unit.node, layout.src)
    if last - first + 1 <= layout.max_lines:
        calls, call_lines = dedupe_calls(unit.calls)
        chunk = make_chunk(
            kind=unit.kind,
            name=unit.parts[-1],
            qualified_name=unit.qn,
            start_line=first,
            end_line=last,
            content=_unit_text(unit, layout, list(range(first, last + 1))),
            signature=unit.signature,
            docstring=unit.docstring,
            calls=calls,
            call_lines=call_lines,
            complexity=1 + len(unit.branches),
            parent_qualified_name=unit.parent_qn,
            receiver=receiver,
        )
        out.append(((first, -last, len(out)), chunk))
        return
    groups = pack_lines(lines, _own_lines(unit, units), layout.max_lines)
    piece_calls, piece_branches = _split_by_line(groups, unit.calls, unit.branches)
    for k, group in enumerate(groups):
        calls, call_lines = dedupe_calls(piece_calls[k])
        chunk = make_chunk(
            kind=unit.kind,
            name=unit.parts[-1],
            qualified_name=piece_name(unit.qn, k),
            start_line=group[0],
            end_line=group[-1],
            content=_unit_text(unit, layout, group),
            signature=unit.signature,
            docstring=unit.docstring if k == 0 else "",
            calls=calls,
            call_lines=call_lines,
            complexity=1 + piece_branches[k],
            parent_qualified_name=unit.parent_qn,
            receiver=receiver,
        )
        out.append(((group[0], -group[-1], len(out)), chunk))


def _module_runs(units: list[Unit], layout: Layout) -> list[list[int]]:
    """Line groups of module-level code that deserve a chunk."""
    n = layout.n_lines
    covered = bytearray(n + 2)
    covered[0] = covered[n + 1] = 1
    for unit in units:
        if unit.container is None:
            last = min(unit.end_line, n)
            covered[unit.start_line : last + 1] = b"\x01" * (last - unit.start_line + 1)
    lines, trivial = layout.lines, layout.trivial
    groups: list[list[int]] = []
    pos = 1
    while True:
        start = covered.find(0, pos)
        if start < 0:
            break
        end = covered.find(1, start)  # first covered line after the run
        pos = end
        run = range(start, end)
        if not any(not trivial[i] and lines[i - 1].strip() for i in run):
            continue
        groups.extend(pack_lines(lines, list(run), layout.max_lines))
    return groups


def _emit_module(units: list[Unit], layout: Layout, out: list[tuple[_SortKey, Chunk]]) -> None:
    groups = _module_runs(units, layout)
    if not groups:
        return
    piece_calls, piece_branches = _split_by_line(
        groups, layout.module_calls, layout.module_branches, strict=True
    )
    doc_piece = -1
    if layout.module_doc is not None:
        doc_line = layout.module_doc[0]
        for k, group in enumerate(groups):
            if group[0] <= doc_line <= group[-1]:
                doc_piece = k
    for k, group in enumerate(groups):
        lo, hi = group[0], group[-1]
        calls, call_lines = dedupe_calls(piece_calls[k])
        chunk = make_chunk(
            kind="module",
            name=layout.file_name,
            qualified_name=piece_name(layout.file_qn, k),
            start_line=lo,
            end_line=hi,
            content=_text(layout.lines, group),
            docstring=layout.module_doc[1] if k == doc_piece and layout.module_doc else "",
            calls=calls,
            call_lines=call_lines,
            complexity=1 + piece_branches[k],
        )
        out.append(((lo, -hi, len(out)), chunk))


def build_chunks(units: list[Unit], layout: Layout) -> list[Chunk]:
    """All chunks of a parsed file, in document order (parents before children)."""
    out: list[tuple[_SortKey, Chunk]] = []
    for unit in units:
        _emit_unit(unit, units, layout, out)
    _emit_module(units, layout, out)
    out.sort(key=lambda item: item[0])
    return [chunk for _, chunk in out]
