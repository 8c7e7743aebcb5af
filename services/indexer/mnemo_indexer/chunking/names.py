"""Name helpers: module paths, identifier splitting, callee and comment cleanup.

All functions here are pure string functions with no tree-sitter dependency.
"""

from __future__ import annotations

import inspect
import re

from mnemo_core.text import module_path

# Segments dropped from the end of a module path: package entry files.

_WS = re.compile(r"\s+")
_SLUG_JUNK = re.compile(r"[^\w]+")
_SIMPLE_CALLEE = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*")
_VALID_CALLEE = re.compile(r"(?:@@?)?[\w$~][\w$.!?~]*")
_NEW_PREFIX = re.compile(r"\A(?:new|await|yield)\s+")
_MULTI_DOT = re.compile(r"\.{2,}")
_OPEN = {"(": ")", "[": "]", "{": "}", "<": ">"}

#: Longest raw callee text worth normalizing; longer ones fall back to a name.
MAX_CALLEE_BYTES = 256
#: Longest signature kept, in characters.
MAX_SIGNATURE_CHARS = 1000


def qualified_prefix(path: str) -> str:
    """Module path that prefixes a file's definitions: ``json/decoder.py`` -> ``json.decoder``.

    Empty for the entry file of the repository's root package (a root ``__init__.py``,
    ``index.js``, ``mod.rs``): that package is the repository itself, so its definitions
    are top-level names (``message_from_string``, never ``__init__.message_from_string``).
    """
    return module_path(path)


def file_qualified_name(path: str) -> str:
    """Qualified name of a file's own chunks (module-level code, windows, markdown
    sections) and of the file in the graph: its module path, or for a root entry file,
    whose module path is empty, the path itself (``__init__.py``). Never empty."""
    return module_path(path) or path.replace("\\", "/").strip("/") or "_"


def join_name(*parts: str) -> str:
    """Dotted name of the non-empty parts."""
    return ".".join(p for p in parts if p)


def slugify(text: str) -> str:
    """Lowercase dash-separated slug: ``"Getting Started"`` -> ``getting-started``."""
    slug = _SLUG_JUNK.sub("-", text.lower()).strip("-_")
    return slug or "section"


def collapse_ws(text: str) -> str:
    """Collapse every whitespace run to a single space and strip."""
    return _WS.sub(" ", text).strip()


def strip_brackets(text: str, brackets: str = "([{<") -> str:
    """Remove bracketed groups (and their content) for the given opening brackets.

    Unbalanced closers are dropped.  Linear in the length of ``text`` (times
    the nesting depth for mismatched brackets).
    """
    closers = {_OPEN[b] for b in brackets}
    out: list[str] = []
    stack: list[str] = []
    for ch in text:
        if ch in brackets:
            stack.append(_OPEN[ch])
        elif stack:
            if ch in closers and ch in stack:
                while stack.pop() != ch:
                    pass
        elif ch not in closers:
            out.append(ch)
    return "".join(out)


def normalize_callee(text: str) -> str:
    """Turn a callee expression into a dotted name, or ``""`` if it has none.

    ``self.scan_once`` stays as is; ``a.b().c`` -> ``a.b.c``; ``Foo::new`` ->
    ``Foo.new``; ``$this->log`` -> ``$this.log``; ``std::make_unique<T>`` ->
    ``std.make_unique``; ``new Foo`` -> ``Foo``.
    """
    if _SIMPLE_CALLEE.fullmatch(text):
        return text
    s = _NEW_PREFIX.sub("", text.strip())
    s = s.replace("?.", ".").replace("->", ".").replace("::", ".").replace("&.", ".")
    s = strip_brackets(s)
    s = s.replace("\\", ".").replace("*", "").replace("&", "")
    s = _WS.sub("", s)
    s = _MULTI_DOT.sub(".", s).strip(".")
    return s if s and _VALID_CALLEE.fullmatch(s) else ""


def split_scoped(name: str, *, dots: bool = False) -> list[str]:
    """Split a possibly qualified name (``A::B``, ``A\\B``, optionally ``A.B``)."""
    text = collapse_ws(name).replace("::", "\x00").replace("\\", "\x00")
    if dots:
        text = text.replace(".", "\x00")
    return [p.strip() for p in text.split("\x00") if p.strip()]


def strip_generics(name: str) -> str:
    """``Stack<T>`` -> ``Stack``; ``List[T]`` -> ``List``."""
    return collapse_ws(strip_brackets(name, "<[")) if ("<" in name or "[" in name) else name


def signature_text(raw: str) -> str:
    """Whitespace-normalized declaration head without the body opener."""
    sig = collapse_ws(raw)
    while sig and sig[-1] in ":{=;":
        sig = sig[:-1].rstrip()
    if sig.endswith("=>"):
        sig = sig[:-2].rstrip()
    if sig.endswith(" do"):
        sig = sig[:-3].rstrip()
    return sig[:MAX_SIGNATURE_CHARS]


_STRING_PREFIX = re.compile(r"\A[rRbBuUfF]{0,2}")


def python_string_body(literal: str) -> str:
    """The text of a Python string literal without prefix and quotes, cleaned like a docstring."""
    s = _STRING_PREFIX.sub("", literal, count=1)
    for quote in ('"""', "'''", '"', "'"):
        if s.startswith(quote) and s.endswith(quote) and len(s) >= 2 * len(quote):
            s = s[len(quote) : -len(quote)]
            break
    return inspect.cleandoc(s)


_COMMENT_LINE_PREFIX = re.compile(r"\A\s*(?://!|///?|#|\*(?!/))?[ \t]?")


def clean_comment(texts: list[str]) -> str:
    """Strip comment markers from consecutive comment nodes and join their text."""
    lines: list[str] = []
    for text in texts:
        body = text.strip()
        if body.startswith("/*"):
            body = body[2:]
            body = body.removeprefix("*").removeprefix("!")
            body = body.removesuffix("*/")
        elif body.startswith("=begin"):
            body = body.removeprefix("=begin").removesuffix("=end")
        for line in body.split("\n"):
            lines.append(_COMMENT_LINE_PREFIX.sub("", line, count=1).rstrip())
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """``text`` split at each ``sep`` outside braces, parts stripped, empty ones dropped
    (``a, {b, c}, d`` -> ``a``, ``{b, c}``, ``d``)."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def expand_use_tree(text: str, separator: str) -> list[str]:
    """Expand a Rust ``use`` tree or PHP group ``use`` into dotted paths.

    ``std::fmt::{self, Display}`` -> ``["std.fmt", "std.fmt.Display"]``;
    aliases (``as x``) are dropped; ``*`` is kept as the last segment.
    """
    text = _WS.sub(" ", text).strip()
    brace = text.find("{")
    if brace < 0:
        path = re.split(r"\s+as\s+", text)[0].strip()
        path = path.replace(separator, ".").strip(".").replace(" ", "")
        return [path] if path else []
    close = text.rfind("}")
    prefix = text[:brace].strip()
    if prefix.endswith(separator):
        prefix = prefix[: -len(separator)]
    prefix = prefix.replace(separator, ".").strip(".").replace(" ", "")
    results: list[str] = []
    for part in split_top_level(text[brace + 1 : close if close > brace else len(text)]):
        for sub in expand_use_tree(part, separator):
            if sub == "self":
                results.append(prefix)
            else:
                results.append(f"{prefix}.{sub}" if prefix else sub)
    return [r for r in results if r]


def resolve_relative_import(module: str, is_package: bool, level: int, rest: str) -> str:
    """Resolve a Python relative import against the importing module's path.

    ``module`` is the importing file's module path (``pkg.sub.a``), ``is_package``
    tells whether the file is a package ``__init__``.  ``level`` is the number
    of leading dots and ``rest`` the dotted name after them.
    """
    parts = module.split(".") if module else []
    if not is_package and parts:
        parts.pop()
    drop = level - 1
    if drop > 0:
        parts = parts[:-drop] if drop < len(parts) else []
    if rest:
        parts.extend(rest.split("."))
    return ".".join(parts)
