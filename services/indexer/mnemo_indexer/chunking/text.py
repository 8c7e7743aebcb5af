"""Chunkers that need no grammar: markdown sections and plain line windows."""

from __future__ import annotations

import re

from .model import Chunk, QualifiedNames, make_chunk, piece_name
from .names import file_qualified_name, slugify

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*\Z")
_CLOSING_HASHES = re.compile(r"(?:\A|[ \t]+)#+\Z")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


def _split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _trimmed(lines: list[str], first: int, last: int) -> tuple[int, int] | None:
    """Shrink the 1-based inclusive range to its non-blank ends (None if all blank)."""
    while first <= last and not lines[first - 1].strip():
        first += 1
    while last >= first and not lines[last - 1].strip():
        last -= 1
    return (first, last) if first <= last else None


def window_ranges(
    lines: list[str], first: int, last: int, window: int, overlap: int
) -> list[tuple[int, int]]:
    """Overlapping windows over ``first..last`` (1-based, inclusive), all-blank ones dropped.

    Consecutive windows share ``overlap`` lines; the last window ends at ``last``.
    """
    ranges: list[tuple[int, int]] = []
    step = max(window - overlap, 1)
    start = first
    while start <= last:
        end = min(start + window - 1, last)
        trimmed = _trimmed(lines, start, end)
        if trimmed is not None:
            ranges.append(trimmed)
        if end >= last:
            break
        start += step
    return ranges


def chunk_windows(path: str, text: str, window: int, overlap: int) -> list[Chunk]:
    """Plain text: overlapping windows of ``window`` lines, kind ``window``."""
    lines = _split_lines(text)
    prefix = file_qualified_name(path)
    chunks = []
    for first, last in window_ranges(lines, 1, len(lines), window, overlap):
        chunks.append(
            make_chunk(
                kind="window",
                name=f"{path}:{first}-{last}",
                qualified_name=f"{prefix}:{first}-{last}",
                start_line=first,
                end_line=last,
                content="\n".join(lines[first - 1 : last]),
            )
        )
    return chunks


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line, level, text) of every ATX heading outside fenced code blocks."""
    found: list[tuple[int, int, str]] = []
    fence: str | None = None
    for number, line in enumerate(lines, 1):
        fence_match = _FENCE.match(line)
        if fence_match is not None:
            marker = fence_match.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            continue
        if fence is not None or "#" not in line[:4]:
            continue
        match = _ATX.match(line)
        if match is None:
            continue
        title = _CLOSING_HASHES.sub("", match.group(2) or "").strip()
        found.append((number, len(match.group(1)), title))
    return found


def chunk_markdown(path: str, text: str, max_lines: int, window: int, overlap: int) -> list[Chunk]:
    """Markdown: one ``section`` per ATX heading, with the text before the first one.

    A section runs from its heading to the line before the next heading of any
    level.  Its qualified name is the module path plus the slugs of the heading
    chain (``docs.guide.getting-started.install``); its parent is the section
    of the enclosing heading.  Sections longer than ``max_lines`` are cut into
    overlapping windows (``@2``, ``@3``... for the extra pieces).
    """
    lines = _split_lines(text)
    prefix = file_qualified_name(path)
    headings = _headings(lines)
    names = QualifiedNames()
    chunks: list[Chunk] = []
    base_name = path.replace("\\", "/").rsplit("/", 1)[-1]
    first_heading = headings[0][0] if headings else len(lines) + 1
    preamble = _trimmed(lines, 1, first_heading - 1)
    if preamble is not None:
        qn = names.claim(prefix)
        chunks.extend(
            _section_chunks(lines, preamble, base_name, qn, "", None, max_lines, window, overlap)
        )
    chain: list[tuple[int, str, str]] = []  # (level, slug, qualified name)
    for i, (line, level, title) in enumerate(headings):
        while chain and chain[-1][0] >= level:
            chain.pop()
        slug = slugify(title)
        parent_qn = chain[-1][2] if chain else None
        qn = names.claim(".".join([prefix, *[c[1] for c in chain], slug]))
        chain.append((level, slug, qn))
        end = headings[i + 1][0] - 1 if i + 1 < len(headings) else len(lines)
        span = _trimmed(lines, line, end) or (line, line)
        name = title or f"{base_name}:{line}"
        signature = lines[line - 1].strip()
        chunks.extend(
            _section_chunks(lines, span, name, qn, signature, parent_qn, max_lines, window, overlap)
        )
    return chunks


def _section_chunks(
    lines: list[str],
    span: tuple[int, int],
    name: str,
    qn: str,
    signature: str,
    parent_qn: str | None,
    max_lines: int,
    window: int,
    overlap: int,
) -> list[Chunk]:
    first, last = span
    if last - first + 1 <= max_lines:
        ranges = [(first, last)]
    else:
        ranges = window_ranges(lines, first, last, min(window, max_lines), overlap)
    return [
        make_chunk(
            kind="section",
            name=name,
            qualified_name=piece_name(qn, k),
            start_line=lo,
            end_line=hi,
            content="\n".join(lines[lo - 1 : hi]),
            signature=signature,
            parent_qualified_name=parent_qn,
        )
        for k, (lo, hi) in enumerate(ranges)
    ]
