"""Import extractors, referenced by name from the language tables.

Each extractor gets the captured import node and returns the imported
modules/names as written, dotted where the language uses another separator
(``::`` in Rust, ``\\`` in PHP).  Python relative imports are resolved against
the importing file's module path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .names import collapse_ws, expand_use_tree, resolve_relative_import, split_top_level

_QUOTES = {'"': '"', "'": "'", "`": "`", "<": ">"}


@dataclass(frozen=True, slots=True)
class ImportContext:
    src: bytes
    module: str  # module path of the importing file
    is_package: bool  # the file is a package entry (__init__.py)
    # Names an import binds to something of another name: Python's ``import a.b as x`` and
    # ``from a import b as x``; JavaScript's ``import { b as x } from './a'`` and
    # ``import * as x from './a'``: x -> (the module as written, the member or "").
    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)


def node_text(src: bytes, node: Any) -> str:
    return src[node.start_byte : node.end_byte].decode("utf-8", "replace")


def unquote(text: str) -> str:
    """Strip one pair of string delimiters (quotes, backticks or ``<>``)."""
    text = text.strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        return text[1:-1]
    return text


def _py_dotted(ctx: ImportContext, node: Any, module: str = "") -> str:
    if node.type == "aliased_import":
        inner = node.child_by_field_name("name")
        if inner is None:
            return ""
        name = node_text(ctx.src, inner)
        alias = node.child_by_field_name("alias")
        if alias is not None:
            ctx.aliases[node_text(ctx.src, alias)] = (module, name) if module else (name, "")
        return name
    return node_text(ctx.src, node)


def py_import(ctx: ImportContext, node: Any) -> list[str]:
    return [_py_dotted(ctx, n) for n in node.children_by_field_name("name")]


def _py_module(ctx: ImportContext, node: Any | None) -> str:
    if node is None:
        return ""
    if node.type != "relative_import":
        return node_text(ctx.src, node)
    level = 0
    rest = ""
    for child in node.named_children:
        if child.type == "import_prefix":
            level = node_text(ctx.src, child).count(".")
        else:
            rest = node_text(ctx.src, child)
    return resolve_relative_import(ctx.module, ctx.is_package, level, rest)


def py_from(ctx: ImportContext, node: Any) -> list[str]:
    module = _py_module(ctx, node.child_by_field_name("module_name"))
    names = [_py_dotted(ctx, n, module) for n in node.children_by_field_name("name")]
    if any(child.type == "wildcard_import" for child in node.named_children):
        names.append("*")
    if not names:
        return [module] if module else []
    return [f"{module}.{name}" if module else name for name in names if name]


def py_future(ctx: ImportContext, node: Any) -> list[str]:
    return [f"__future__.{_py_dotted(ctx, n)}" for n in node.children_by_field_name("name")]


def js_source(ctx: ImportContext, node: Any) -> list[str]:
    source = node.child_by_field_name("source")
    if source is None:
        # import x = require("y") in TypeScript
        for child in node.named_children:
            if child.type == "import_require_clause":
                source = child.child_by_field_name("source")
    if source is None:
        return []
    module = unquote(node_text(ctx.src, source))
    for clause in node.named_children:
        if clause.type == "import_clause":
            _js_bindings(ctx, clause, module)
    return [module]


def _js_bindings(ctx: ImportContext, clause: Any, module: str) -> None:
    """``{ b }`` and ``{ b as x }`` bind a member of the module, ``* as x`` the module."""
    for part in clause.named_children:
        if part.type == "namespace_import":
            for ident in part.named_children:
                ctx.aliases[node_text(ctx.src, ident)] = (module, "")
        elif part.type == "named_imports":
            for spec in part.named_children:
                name = spec.child_by_field_name("name")
                if spec.type != "import_specifier" or name is None:
                    continue
                alias = spec.child_by_field_name("alias")
                bound = node_text(ctx.src, alias if alias is not None else name)
                ctx.aliases[bound] = (module, node_text(ctx.src, name))


def path_field(ctx: ImportContext, node: Any) -> list[str]:
    path = node.child_by_field_name("path")
    return [unquote(node_text(ctx.src, path))] if path is not None else []


def name_field(ctx: ImportContext, node: Any) -> list[str]:
    name = node.child_by_field_name("name")
    return [node_text(ctx.src, name)] if name is not None else []


def rust_use(ctx: ImportContext, node: Any) -> list[str]:
    argument = node.child_by_field_name("argument")
    if argument is None:
        return []
    return expand_use_tree(node_text(ctx.src, argument), "::")


def java_import(ctx: ImportContext, node: Any) -> list[str]:
    text = collapse_ws(node_text(ctx.src, node))
    text = text.removeprefix("import").strip().removesuffix(";").strip()
    text = text.removeprefix("static ").replace(" ", "")
    return [text] if text else []


def csharp_using(ctx: ImportContext, node: Any) -> list[str]:
    target = None
    for i, child in enumerate(node.children):
        if child.is_named and node.field_name_for_child(i) != "name":
            target = child
    if target is None:
        target = node.child_by_field_name("name")
    return [node_text(ctx.src, target).replace("::", ".")] if target is not None else []


def php_use(ctx: ImportContext, node: Any) -> list[str]:
    text = collapse_ws(node_text(ctx.src, node))
    text = text.removeprefix("use").strip().removesuffix(";").strip()
    for keyword in ("function ", "const "):
        text = text.removeprefix(keyword)
    results: list[str] = []
    for part in split_top_level(text):
        results.extend(p.lstrip(".") for p in expand_use_tree(part, "\\"))
    return [r for r in results if r]


_STRING_TYPES = frozenset({"string", "encapsed_string", "string_literal", "raw_string_literal"})


def first_string(ctx: ImportContext, node: Any) -> list[str]:
    for child in node.named_children:
        if child.type in _STRING_TYPES:
            return [unquote(node_text(ctx.src, child))]
        return [collapse_ws(node_text(ctx.src, child))]
    return []


def call_argument_import(ctx: ImportContext, call: Any) -> str | None:
    """The string argument of ``require("x")``-style calls, if it is a literal."""
    args = call.child_by_field_name("arguments")
    if args is None:
        return None
    for child in args.named_children:
        if child.type in ("string", "template_string") and child.named_child_count <= 1:
            text = unquote(node_text(ctx.src, child))
            return text or None
        return None
    return None


EXTRACTORS: dict[str, Callable[[ImportContext, Any], list[str]]] = {
    "py_import": py_import,
    "py_from": py_from,
    "py_future": py_future,
    "js_source": js_source,
    "path_field": path_field,
    "name_field": name_field,
    "rust_use": rust_use,
    "java_import": java_import,
    "csharp_using": csharp_using,
    "php_use": php_use,
    "first_string": first_string,
}
