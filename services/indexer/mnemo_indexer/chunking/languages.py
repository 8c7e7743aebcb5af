"""Language detection, grammar loading and the declarative per-language tables.

Each :class:`LangSpec` says, as tree-sitter query patterns, which nodes are
chunk units (and of which kind), which are calls (and where the callee is),
which are decision points, imports and comments.  :mod:`.treesitter` turns
those tables into one compiled query per language and walks its captures;
there is no per-language walker.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import Any

from .lang_tables import SPECS

CODE_LANGUAGES: frozenset[str] = frozenset(SPECS)
SUPPORTED_LANGUAGES: frozenset[str] = CODE_LANGUAGES | {"markdown", "text"}

_EXTENSIONS: Mapping[str, str] = MappingProxyType(
    {
        ".py": "python",
        ".pyi": "python",
        ".pyw": "python",
        ".js": "javascript",
        ".mjs": "javascript",
        ".cjs": "javascript",
        ".jsx": "javascript",
        ".ts": "typescript",
        ".mts": "typescript",
        ".cts": "typescript",
        ".tsx": "tsx",
        ".go": "go",
        ".rs": "rust",
        ".java": "java",
        ".c": "c",
        ".h": "c",
        ".cc": "cpp",
        ".cpp": "cpp",
        ".cxx": "cpp",
        ".c++": "cpp",
        ".hpp": "cpp",
        ".hh": "cpp",
        ".hxx": "cpp",
        ".h++": "cpp",
        ".rb": "ruby",
        ".rake": "ruby",
        ".gemspec": "ruby",
        ".cs": "csharp",
        ".php": "php",
        ".md": "markdown",
        ".markdown": "markdown",
        ".mdown": "markdown",
        ".mkd": "markdown",
    }
)

_TEXT_EXTENSIONS: frozenset[str] = frozenset(
    """
    .txt .text .rst .adoc .asciidoc .org .tex .log .csv .tsv .toml .yaml .yml .json .jsonc
    .json5 .jsonl .ndjson .cfg .ini .conf .config .properties .env .editorconfig .sh .bash
    .zsh .fish .ksh .ps1 .psm1 .bat .cmd .sql .html .htm .xhtml .xml .xsd .xsl .svg .css
    .scss .sass .less .vue .svelte .astro .graphql .gql .proto .thrift .avsc .tf .tfvars
    .hcl .nix .dockerfile .mk .make .cmake .gradle .kt .kts .scala .sc .swift .m .mm .lua
    .pl .pm .r .jl .dart .ex .exs .erl .hrl .hs .ml .mli .fs .fsx .clj .cljs .edn .el .lisp
    .scm .vim .zig .nim .v .sv .vhd .vhdl .groovy .pyx .pxd .ipynb .tpl .j2 .jinja .jinja2
    .mustache .hbs .ejs .erb .haml .pug .diff .patch .gitignore .gitattributes .dockerignore
    .npmignore .lock .plist .bib .po .pot .srt .vtt .in
    """.split()
)

_TEXT_FILENAMES: frozenset[str] = frozenset(
    {
        "makefile",
        "gnumakefile",
        "dockerfile",
        "containerfile",
        "jenkinsfile",
        "vagrantfile",
        "procfile",
        "readme",
        "license",
        "licence",
        "copying",
        "authors",
        "contributors",
        "changelog",
        "changes",
        "notice",
        "todo",
        "manifest",
        "codeowners",
    }
)

_SPECIAL_FILENAMES: Mapping[str, str] = MappingProxyType(
    {"rakefile": "ruby", "gemfile": "ruby", "guardfile": "ruby", "podfile": "ruby"}
)

_SHEBANGS: tuple[tuple[str, str], ...] = (
    ("python", "python"),
    ("node", "javascript"),
    ("deno", "typescript"),
    ("ruby", "ruby"),
    ("php", "php"),
    ("sh", "text"),
    ("bash", "text"),
    ("zsh", "text"),
    ("perl", "text"),
)

#: Bytes of content inspected when sniffing for binary data.
_SNIFF_CHARS = 8192


def _looks_binary(content: str) -> bool:
    return "\x00" in content[:_SNIFF_CHARS]


def _from_shebang(content: str) -> str | None:
    if not content.startswith("#!"):
        return None
    first = content[:200].split("\n", 1)[0]
    words = first[2:].replace("/", " ").split()
    for word in reversed(words):
        base = word.rstrip("0123456789.")
        for prefix, lang in _SHEBANGS:
            if base == prefix:
                return lang
    return None


def detect_language(path: str, content: str | None = None) -> str | None:
    """Language of a file, from its extension (and shebang if it has none).

    Returns one of :data:`SUPPORTED_LANGUAGES`, or ``None`` for unknown types
    and for content that looks binary (contains NUL characters).
    """
    if content is not None and _looks_binary(content):
        return None
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    lower = base.lower()
    dot = lower.rfind(".")
    ext = lower[dot:] if dot > 0 else ""
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    if ext in _TEXT_EXTENSIONS or (dot == 0 and lower in _TEXT_EXTENSIONS):
        return "text"
    if lower in _SPECIAL_FILENAMES:
        return _SPECIAL_FILENAMES[lower]
    stem = lower[:dot] if dot > 0 else lower
    if stem in _TEXT_FILENAMES or lower in _TEXT_FILENAMES:
        return "text"
    if not ext and content is not None:
        return _from_shebang(content)
    return None


# ---------------------------------------------------------------------------
# Grammars and compiled queries


@dataclass(frozen=True)
class CallRule:
    """How to read the callee of one call pattern."""

    field: str | None  # field holding the callee expression
    before: tuple[str, ...]  # or: the text before the first of these fields
    fallback: str | None  # field used when the callee text is too long
    suffix: str = ""  # appended to the callee (Rust macros get "!")


def parse_call_rule(rule: str) -> CallRule:
    """``"function"``, ``"macro!"`` or ``"<arguments,block|method"``."""
    main, _, fallback = rule.partition("|")
    suffix = "!" if main.endswith("!") else ""
    main = main.rstrip("!")
    if main.startswith("<"):
        fields = tuple(f for f in main[1:].split(",") if f)
        return CallRule(None, fields, fallback or None, suffix)
    return CallRule(main, (), fallback or None, suffix)


@dataclass(frozen=True)
class Grammar:
    """A loaded language: tree-sitter Language, compiled query and capture maps."""

    name: str
    language: Any
    query: Any
    unit_kinds: Mapping[str, str]
    call_rules: Mapping[str, CallRule]
    import_rules: Mapping[str, str]
    rejected: tuple[str, ...] = field(default=())


def _load_language(name: str) -> Any:
    import tree_sitter

    module_name, attr = SPECS[name].grammar
    module = importlib.import_module(module_name)
    return tree_sitter.Language(getattr(module, attr)())


def _compile(language: Any, patterns: list[str]) -> tuple[Any, tuple[str, ...]]:
    """Compile the patterns that the installed grammar accepts into one query."""
    import tree_sitter

    good: list[str] = []
    rejected: list[str] = []
    for pattern in patterns:
        try:
            tree_sitter.Query(language, pattern)
        except (tree_sitter.QueryError, ValueError):
            rejected.append(pattern)
        else:
            good.append(pattern)
    return tree_sitter.Query(language, "\n".join(good)), tuple(rejected)


@cache
def get_grammar(name: str) -> Grammar:
    """Load and cache the grammar and the combined query for a code language.

    Patterns the installed grammar version does not know are left out (and
    listed in ``Grammar.rejected``) rather than failing the whole language.
    Raises ``ImportError`` if the grammar package is missing.
    """
    spec = SPECS[name]
    language = _load_language(name)
    patterns: list[str] = []
    unit_kinds: dict[str, str] = {}
    call_rules: dict[str, CallRule] = {}
    import_rules: dict[str, str] = {}
    for i, (pattern, kind) in enumerate(spec.units):
        unit_kinds[f"u{i}"] = kind
        patterns.append(f"{pattern} @u{i}")
    for i, (pattern, rule) in enumerate(spec.calls):
        call_rules[f"c{i}"] = parse_call_rule(rule)
        patterns.append(f"{pattern} @c{i}")
    for i, (pattern, extractor) in enumerate(spec.imports):
        import_rules[f"i{i}"] = extractor
        patterns.append(f"{pattern} @i{i}")
    patterns.extend(f"{pattern} @b" for pattern in spec.branches)
    patterns.extend(f"({node_type}) @m" for node_type in spec.comments)
    patterns.extend(f"{pattern} @s" for pattern in spec.scopes)
    query, rejected = _compile(language, patterns)
    return Grammar(
        name=name,
        language=language,
        query=query,
        unit_kinds=MappingProxyType(unit_kinds),
        call_rules=MappingProxyType(call_rules),
        import_rules=MappingProxyType(import_rules),
        rejected=rejected,
    )


_local = threading.local()


def get_parser(name: str) -> Any:
    """A tree-sitter parser for ``name``, one per thread (parsers are not thread-safe)."""
    import tree_sitter

    parsers: dict[str, Any] | None = getattr(_local, "parsers", None)
    if parsers is None:
        parsers = _local.parsers = {}
    parser = parsers.get(name)
    if parser is None:
        parser = parsers[name] = tree_sitter.Parser(get_grammar(name).language)
    return parser
