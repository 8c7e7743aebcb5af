"""Entry point: :func:`parse_file` dispatches to the right chunker."""

from __future__ import annotations

from .languages import CODE_LANGUAGES, SUPPORTED_LANGUAGES, detect_language
from .model import ParsedFile, ParseError, sha256_hex
from .text import chunk_markdown, chunk_windows
from .treesitter import chunk_code


def _check_options(max_chunk_lines: int, window_lines: int, window_overlap: int) -> None:
    if max_chunk_lines < 1:
        raise ValueError("max_chunk_lines must be at least 1")
    if window_lines < 1:
        raise ValueError("window_lines must be at least 1")
    if not 0 <= window_overlap < window_lines:
        raise ValueError("window_overlap must be >= 0 and smaller than window_lines")


def parse_file(
    path: str,
    content: str,
    language: str | None = None,
    *,
    max_chunk_lines: int = 200,
    window_lines: int = 60,
    window_overlap: int = 10,
) -> ParsedFile:
    """Split one file into chunks and list its imports.

    ``language`` defaults to :func:`detect_language`.  Code in a supported
    language is chunked along its definitions; markdown by headings; anything
    else textual (``"text"``, or code whose grammar cannot be loaded) into
    overlapping line windows.  Syntax errors never raise: whatever parsed is
    returned.

    Raises :class:`ParseError` when the content is not text (contains NUL
    characters), when the language cannot be detected, or when ``language``
    is not one of :data:`SUPPORTED_LANGUAGES`.  Raises ``ValueError`` for
    invalid size options.
    """
    _check_options(max_chunk_lines, window_lines, window_overlap)
    if "\x00" in content:
        raise ParseError(f"{path}: content contains NUL characters (binary data)")
    lang = language if language is not None else detect_language(path, content)
    if lang is None:
        raise ParseError(f"{path}: unsupported file type")
    if lang not in SUPPORTED_LANGUAGES:
        raise ParseError(f"{path}: unsupported language {lang!r}")
    file_hash = sha256_hex(content)
    if lang in CODE_LANGUAGES:
        try:
            imports, chunks = chunk_code(path, content, lang, max_chunk_lines)
        except (ImportError, OSError, RuntimeError):
            # grammar package missing or unusable: still index the text
            chunks = chunk_windows(path, content, window_lines, window_overlap)
            imports = ()
        return ParsedFile(path, lang, imports, tuple(chunks), file_hash)
    if lang == "markdown":
        chunks = chunk_markdown(path, content, max_chunk_lines, window_lines, window_overlap)
    else:
        chunks = chunk_windows(path, content, window_lines, window_overlap)
    return ParsedFile(path, lang, (), tuple(chunks), file_hash)
