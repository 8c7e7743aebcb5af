"""Entry point: :func:`parse_file` dispatches to the right chunker."""

from __future__ import annotations

from functools import cache

from mnemo_core import logging as mlog

from .languages import CODE_LANGUAGES, SUPPORTED_LANGUAGES, detect_language
from .model import ParsedFile, ParseError, sha256_hex
from .text import chunk_markdown, chunk_windows
from .treesitter import chunk_code

log = mlog.get(__name__)


def _check_options(max_chunk_lines: int, window_lines: int, window_overlap: int) -> None:
    if max_chunk_lines < 1:
        raise ValueError("max_chunk_lines must be at least 1")
    if window_lines < 1:
        raise ValueError("window_lines must be at least 1")
    if not 0 <= window_overlap < window_lines:
        raise ValueError("window_overlap must be >= 0 and smaller than window_lines")


@cache
def _grammar_unavailable(language: str, error: str) -> None:
    """Say once per language (and process) that its files are indexed as plain windows."""
    log.warning("grammar_unavailable", language=language, error=error, fallback="windows")


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
    language is chunked along its definitions; markdown by headings; any other
    text (``"text"``, a file type nobody registered such as ``.bnf`` or
    ``.peg``, a file without extension, or code whose grammar cannot be
    loaded) into overlapping line windows.  Syntax errors never raise: whatever
    parsed is returned.

    Raises :class:`ParseError` when the content is not text (contains NUL
    characters) or when ``language`` is given and is not one of
    :data:`SUPPORTED_LANGUAGES`.  Its reason never repeats the path (callers
    show it next to the path).  Raises ``ValueError`` for invalid size options.
    """
    _check_options(max_chunk_lines, window_lines, window_overlap)
    if "\x00" in content:
        raise ParseError("content contains NUL characters (binary data)")
    if language is not None and language not in SUPPORTED_LANGUAGES:
        raise ParseError(
            f"unsupported language {language!r} (one of {', '.join(sorted(SUPPORTED_LANGUAGES))})"
        )
    lang = language or detect_language(path, content) or "text"
    file_hash = sha256_hex(content)
    if lang in CODE_LANGUAGES:
        try:
            imports, chunks, aliases = chunk_code(path, content, lang, max_chunk_lines)
        except (ImportError, OSError, RuntimeError) as exc:
            # grammar package missing or unusable: still index the text
            _grammar_unavailable(lang, f"{type(exc).__name__}: {exc}")
            chunks = chunk_windows(path, content, window_lines, window_overlap)
            imports, aliases = (), ()
        return ParsedFile(path, lang, imports, tuple(chunks), file_hash, aliases)
    if lang == "markdown":
        chunks = chunk_markdown(path, content, max_chunk_lines, window_lines, window_overlap)
    else:
        chunks = chunk_windows(path, content, window_lines, window_overlap)
    return ParsedFile(path, lang, (), tuple(chunks), file_hash)
