"""Which text of an event gets embedded (MnemoLite's rule)."""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any

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
_NON_WORD = re.compile(r"[\W_]+")
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
    # spent building a chunk's search text (bench/README.md).
    words: list[str] = []
    for part in _NON_WORD.split(name):
        if part:
            words.extend(m.group(0).lower() for m in _IDENT_PART.finditer(part))
    return tuple(words)


def chunk_embed_text(qualified_name: str, signature: str, docstring: str, content: str) -> str:
    """What the model reads for a code chunk: its name, signature and docstring, so a
    description reaches code without docstrings too, then the code."""
    words = " ".join(split_identifier(qualified_name))
    head = "\n".join(p for p in (qualified_name, words, signature, docstring) if p)
    return f"{head}\n{content}"[:EMBED_TEXT_CHARS]


def chunk_search_text(
    path: str, qualified_name: str, signature: str, docstring: str, content: str
) -> str:
    """The lexical leg's document: names as written and split into words, the signature,
    the docstring and every identifier of the code, split too."""
    idents = dict.fromkeys(_IDENTIFIER.findall(f"{qualified_name} {signature} {content}"))
    split = dict.fromkeys(itertools.chain.from_iterable(map(_split, idents)))
    parts = [
        path,
        qualified_name,
        " ".join(split_identifier(qualified_name)),
        signature,
        docstring,
        " ".join(split),
        " ".join(idents).lower(),
    ]
    return "\n".join(p for p in parts if p)[:200_000]


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
