"""Which text of an event gets embedded (MnemoLite's rule)."""

from __future__ import annotations

import collections
import functools
import itertools
import re
from typing import Any

#: Every value a chunk's ``kind`` can take: what the chunker makes
#: (mnemo_indexer.chunking.model) and what the code search's ``kind`` filter accepts.
CHUNK_KINDS: frozenset[str] = frozenset(
    {
        "function",
        "method",
        "constructor",
        "class",
        "struct",
        "interface",
        "trait",
        "impl",
        "enum",
        "module",
        "namespace",
        "section",
        "window",
    }
)


TEXT_FIELDS = ("text", "body", "message", "content", "title")


def event_text(content: Any) -> str | None:
    """The first non-empty string among content.text|body|message|content|title, else None."""
    if not isinstance(content, dict):
        return None
    for key in TEXT_FIELDS:
        value = content.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


_IDENT_PART = re.compile(r"(?:[A-Z]+(?=[A-Z][^\W\d_A-Z])|[A-Z]?[^\W\d_A-Z]+|[A-Z]+|\d+)\d*")
_IDENTIFIER = re.compile(r"[A-Za-z_$][\w$]*")
_LEXEME = re.compile(r"^[a-z0-9]+$")

# Bounds the text handed to the model per chunk: MiniLM reads 256 tokens anyway, and
# tokenizing whole files would cost more than the encoding.
EMBED_TEXT_CHARS = 4000


def split_identifier(name: str) -> list[str]:
    """Split an identifier into lowercase words.

    Handles snake_case, camelCase, PascalCase, acronyms and digits, which stay
    attached to the word before them: ``parseHTTPResponse_v2`` ->
    ``["parse", "http", "response", "v2"]``.
    """
    return list(_split(name))


@functools.lru_cache(maxsize=1 << 16)
def _split(name: str) -> tuple[str, ...]:
    # Cached: a codebase repeats its identifiers, and splitting them was most of the time
    # spent building a chunk's search text (bench/README.md). No word pattern matches
    # (or looks ahead through) an underscore or a non-word character, so one findall over
    # the whole name finds the words of each of its parts, in order: twice as fast as
    # cutting it at them first, on the ~71,000 names of the stdlib that miss the cache
    # (bench/README.md, change 30).
    return tuple(map(str.lower, _IDENT_PART.findall(name)))


def chunk_embed_text(qualified_name: str, signature: str, docstring: str, content: str) -> str:
    """What the model reads for a code chunk: its name, signature and docstring, so a
    description reaches code without docstrings too, then the code."""
    words = " ".join(split_identifier(qualified_name))
    head = "\n".join(p for p in (qualified_name, words, signature, docstring) if p)
    return f"{head}\n{content}"[:EMBED_TEXT_CHARS]


#: The lexical document's words: runs of letters and digits, lowercased (underscores, ``$``
#: and punctuation separate, as in PostgreSQL's parser). Only [a-z0-9] words are ever
#: queried (``lexical_terms``); the others are kept, harmlessly.
_WORD = re.compile(r"[^\W_]+")
#: PostgreSQL keeps at most 256 positions of a lexeme and refuses one over 2,047 bytes.
_MAX_POSITIONS = 255
_MAX_LEXEME_BYTES = 2047
#: Characters of lexemes per chunk; the rest of an enormous chunk's words are dropped.
LEXEME_BUDGET = 200_000
# ":1", ":1,2", ... : a lexeme's positions, one per occurrence.
_POSITIONS = [""] + [":" + ",".join(map(str, range(1, n + 1))) for n in range(1, 256)]


@functools.lru_cache(maxsize=1 << 16)
def _ident_words(ident: str) -> tuple[str, ...]:
    """An identifier's words in the lexical document: split (``parseHTTP_v2`` -> parse,
    http, v2), then as written, lowercased (``parsehttp``, ``v2``)."""
    return _split(ident) + tuple(_WORD.findall(ident.lower()))


def chunk_lexemes(
    path: str, qualified_name: str, signature: str, docstring: str, content: str
) -> str:
    """The lexical leg's document of a chunk, as a ``tsvector`` literal: the words of its
    path, qualified name (as written and split), signature and docstring, and of every
    identifier in its code (split, and as written), each with one position per occurrence
    (``ts_rank_cd`` of an OR query adds one cover per occurrence: positions stand for the
    count). Built here rather than by ``to_tsvector`` in a generated column, which was a
    quarter of PostgreSQL's time indexing code (bench/README.md, change 20).
    """
    counts = collections.Counter(
        _WORD.findall(f"{path}\n{qualified_name}\n{signature}\n{docstring}".lower())
    )
    counts.update(_split(qualified_name))
    idents = dict.fromkeys(_IDENTIFIER.findall(f"{qualified_name} {signature} {content}"))
    counts.update(itertools.chain.from_iterable(map(_ident_words, idents)))
    if not counts:
        return ""
    if (
        sum(map(len, counts)) > LEXEME_BUDGET
        or max(map(len, counts)) * 4 > _MAX_LEXEME_BYTES
        or max(counts.values()) > _MAX_POSITIONS
    ):
        return _bounded_lexemes(counts)
    # Words hold no whitespace, quote, backslash or colon: they need no quoting.
    return " ".join([w + _POSITIONS[n] for w, n in counts.items()])


def _bounded_lexemes(counts: collections.Counter[str]) -> str:
    """The literal of an unusual chunk: PostgreSQL's limits applied, within the budget."""
    parts, size = [], 0
    for w, n in counts.items():
        if len(w.encode("utf-8", "surrogatepass")) > _MAX_LEXEME_BYTES:
            continue  # to_tsvector drops such a word too
        size += len(w)
        if size > LEXEME_BUDGET:
            break
        parts.append(w + _POSITIONS[min(n, _MAX_POSITIONS)])
    return " ".join(parts)


STOPWORDS = frozenset(
    "a an and are as at be by do does for from how i in into is it its of on or that the this "
    "to what when where which who why with".split()
)


def lexical_terms(query: str) -> list[str]:
    """Query words for the full-text leg: identifiers split like the documents, plus the
    identifiers themselves lowercased; only [a-z0-9] lexemes, so the tsquery is data."""
    terms: list[str] = []
    for ident in _IDENTIFIER.findall(query) + re.findall(r"\d+", query):
        low = ident.lower().strip("_$")
        for t in [low, *split_identifier(ident)]:
            t = re.sub(r"[^a-z0-9]", "", t)
            if len(t) > 1 and t not in STOPWORDS and _LEXEME.match(t) and t not in terms:
                terms.append(t)
    return terms[:32]


def tsquery(terms: list[str]) -> str:
    """An OR over safe lexemes (see lexical_terms); longer words also match as prefixes."""
    return " | ".join(f"{t}:*" if len(t) >= 4 else t for t in terms)


_INDEX_STEMS = frozenset({"__init__", "index"})
_RUST_INDEX_STEMS = frozenset({"mod"})


def module_path(path: str) -> str:
    """Dotted module path for a file path.

    ``json/decoder.py`` -> ``json.decoder``; ``pkg/__init__.py`` -> ``pkg``;
    ``src/lib/index.ts`` -> ``src.lib``; ``src/net/mod.rs`` -> ``src.net``.
    Only the last extension is stripped.  Returns ``""`` for a bare entry file
    such as ``__init__.py``.
    """
    parts = [p for p in path.replace("\\", "/").split("/") if p and p != "."]
    if not parts:
        return ""
    last = parts[-1]
    stem, dot, ext = last.rpartition(".")
    if dot and stem:
        parts[-1] = stem
    else:
        ext = ""
    if parts[-1] in _INDEX_STEMS or (ext == "rs" and parts[-1] in _RUST_INDEX_STEMS):
        parts.pop()
    return ".".join(parts)
