"""The generic tree-sitter chunker.

One parse and one query per file.  The query (built from the declarative
tables in :mod:`.lang_tables`) captures units, calls, decision points,
imports, comments and file-level scopes in a single pass over the tree, in C.
Python then only touches the captured nodes: units are nested by byte range,
and every call / decision point is attributed to the innermost unit that
contains it (or to module-level code) with a bisect.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from .imports import EXTRACTORS, ImportContext, call_argument_import, node_text, unquote
from .lang_tables import CLASS_NAME_CONSTRUCTOR, SPECS, LangSpec
from .languages import CallRule, Grammar, get_grammar, get_parser
from .layout import Layout, LineIndex, Unit, build_chunks
from .model import CLASS_LIKE_KINDS, SCOPE_KINDS, Chunk, QualifiedNames, dedupe
from .names import (
    MAX_CALLEE_BYTES,
    clean_comment,
    file_qualified_name,
    join_name,
    module_path,
    normalize_callee,
    python_string_body,
    qualified_prefix,
    signature_text,
    split_scoped,
    strip_generics,
)

_FALLBACK_NAME_FIELDS = ("property", "field", "name", "attribute", "method")
_DECLARATOR_NAMES = frozenset(
    {
        "identifier",
        "field_identifier",
        "qualified_identifier",
        "destructor_name",
        "operator_name",
        "type_identifier",
        "template_function",
        "operator_cast",
    }
)
_GO_RECEIVER = re.compile(r"([A-Za-z_]\w*)\s*(?:\[[^\]]*\])?\s*\)\s*\Z")
_ASSIGN_NOISE = frozenset({"prototype", "module", "exports", "this", "window", "self"})
_STRING_NAMES = frozenset({"string", "string_literal"})
#: Bytes scanned for a ``{`` when a unit has no body field.
_SIGNATURE_SCAN = 2000


def _end_line(node: Any) -> int:
    """1-based last line of a node (a node ending at column 0 ends on the previous line)."""
    end = node.end_point
    row = end.row
    if end.column == 0 and row > node.start_point.row:
        row -= 1
    return row + 1


# ---------------------------------------------------------------------------
# Name rules: node -> name parts (scope parts first, the short name last)


def _name_field(node: Any, src: bytes) -> list[str] | None:
    name = node.child_by_field_name("name")
    if name is None:
        return None
    text = node_text(src, name)
    if name.type in _STRING_NAMES:
        text = unquote(text)
    return split_scoped(text) or None


def _declarator_name(node: Any, src: bytes) -> list[str] | None:
    decl = node.child_by_field_name("declarator")
    for _ in range(16):
        if decl is None or decl.type in _DECLARATOR_NAMES:
            break
        inner = decl.child_by_field_name("declarator")
        if inner is None:
            candidates = [
                c
                for c in decl.named_children
                if c.type in _DECLARATOR_NAMES or c.type.endswith("declarator")
            ]
            inner = candidates[0] if candidates else None
        decl = inner
    if decl is None or decl.type not in _DECLARATOR_NAMES:
        return None
    parts = split_scoped(node_text(src, decl))
    if not parts:
        return None
    scope = [strip_generics(p) for p in parts[:-1]]
    last = parts[-1]
    if not last.startswith("operator"):
        last = strip_generics(last)
    return [p for p in scope if p] + [last]


def _type_name(node: Any, src: bytes) -> list[str] | None:
    target = node.child_by_field_name("type")
    if target is None:
        return None
    parts = split_scoped(strip_generics(node_text(src, target)))
    return parts[-1:] or None


def _go_method_name(node: Any, src: bytes) -> list[str] | None:
    name = _name_field(node, src)
    receiver = node.child_by_field_name("receiver")
    if name is None or receiver is None:
        return name
    match = _GO_RECEIVER.search(node_text(src, receiver))
    return [match.group(1), *name] if match else name


def _c_tag_name(node: Any, src: bytes) -> list[str] | None:
    name = _name_field(node, src)
    if name is not None:
        return name
    parent = node.parent
    if parent is not None and parent.type == "type_definition":
        declarator = parent.child_by_field_name("declarator")
        if declarator is not None and declarator.type == "type_identifier":
            return [node_text(src, declarator)]
    return None


_SCOPE_NAME_TYPES = frozenset({"identifier", "scoped_identifier", "qualified_name", "name"})


def _first_name_child(node: Any, src: bytes) -> list[str] | None:
    """A declaration without a name field (Java's ``package a.b;``): its first name child."""
    for child in node.named_children:
        if child.type in _SCOPE_NAME_TYPES:
            return split_scoped(node_text(src, child), dots=True) or None
    return None


def _property_name(node: Any, src: bytes) -> list[str] | None:
    prop = node.child_by_field_name("property")
    return [node_text(src, prop)] if prop is not None else None


def _assign_left_name(node: Any, src: bytes) -> list[str] | None:
    left = node.child_by_field_name("left")
    if left is None:
        return None
    text = node_text(src, left)
    if any(ch in text for ch in "[]()\n"):
        return None
    parts = [p.strip() for p in text.split(".") if p.strip() and p.strip() not in _ASSIGN_NOISE]
    return parts or None


NAME_RULES: dict[str, Callable[[Any, bytes], list[str] | None]] = {
    "name": _name_field,
    "declarator": _declarator_name,
    "type": _type_name,
    "go_method": _go_method_name,
    "c_tag": _c_tag_name,
    "property": _property_name,
    "assign_left": _assign_left_name,
}


# ---------------------------------------------------------------------------


class _FileWalker:
    """Turns the captures of one parsed file into units, imports and chunks."""

    def __init__(self, path: str, text: str, language: str, max_lines: int) -> None:
        self.path = path
        self.language = language
        self.spec: LangSpec = SPECS[language]
        self.grammar: Grammar = get_grammar(language)
        self.src = text.encode("utf-8", "surrogatepass")
        self.index = LineIndex(self.src)
        self.lines = text.split("\n")
        self.n_lines = len(self.lines) - (1 if self.lines[-1] == "" else 0)
        self.max_lines = max_lines
        # Java, C# and PHP name things by their declared package or namespace alone (as
        # those languages do); everywhere else the file's module path comes first.
        self.prefix = qualified_prefix(path) if self.spec.path_scoped else ""
        self.file_qn = file_qualified_name(path)
        mod = module_path(path)
        base = path.replace("\\", "/").rsplit("/", 1)[-1]
        self.import_ctx = ImportContext(self.src, mod, base.startswith("__init__."))
        self.file_name = mod.rpartition(".")[2] or base
        self.trivial = bytearray(self.n_lines + 2)
        self.units: list[Unit] = []
        self.imports: list[tuple[int, str]] = []
        self.module_calls: list[tuple[int, str]] = []
        self.module_branches: list[int] = []
        self.module_doc: tuple[int, str] | None = None
        self.comment_starts: list[int] = []
        self.comment_ends: list[int] = []

    # -- top level -----------------------------------------------------------

    def run(self) -> tuple[tuple[str, ...], list[Chunk], tuple[tuple[str, str, str], ...]]:
        import tree_sitter

        tree = get_parser(self.language).parse(self.src)
        root = tree.root_node
        caps: dict[str, list[Any]] = tree_sitter.QueryCursor(self.grammar.query).captures(root)
        self._collect_units(caps)
        self._nest()
        self._collect_comments(caps.get("m", []))
        self._name_units(caps.get("s", []))
        self._collect_imports(caps)
        self._collect_calls(caps)
        self._collect_branches(caps.get("b", []))
        self._mark_top_level(root)
        layout = Layout(
            src=self.src,
            index=self.index,
            lines=self.lines,
            n_lines=self.n_lines,
            max_lines=self.max_lines,
            file_qn=self.file_qn,
            file_name=self.file_name,
            trivial=self.trivial,
            module_calls=self.module_calls,
            module_branches=self.module_branches,
            module_doc=self.module_doc,
        )
        chunks = build_chunks(self.units, layout)
        self.imports.sort(key=lambda item: item[0])
        aliases = tuple((k, *v) for k, v in self.import_ctx.aliases.items())
        return dedupe([name for _, name in self.imports if name]), chunks, aliases

    # -- units -----------------------------------------------------------------

    def _collect_units(self, caps: dict[str, list[Any]]) -> None:
        seen: set[int] = set()
        for capture in sorted(self.grammar.unit_kinds):
            kind = self.grammar.unit_kinds[capture]
            for node in caps.get(capture, ()):
                if node.id in seen:
                    continue
                seen.add(node.id)
                unit = self._make_unit(node, kind)
                if unit is not None:
                    self.units.append(unit)
        self.units.sort(key=lambda u: (u.start_byte, -u.end_byte, u.node.start_byte))

    def _make_unit(self, node: Any, kind: str) -> Unit | None:
        rule = NAME_RULES[self.spec.names.get(node.type, "name")]
        parts = rule(node, self.src)
        if not parts:
            return None
        if kind in SCOPE_KINDS:
            parts = [p for part in parts for p in part.split(".") if p]
        outer = sig_node = node
        wrappers = self.spec.wrappers
        parent = outer.parent
        while parent is not None and parent.type in wrappers:
            if wrappers[parent.type] == "decl":
                if sum(1 for c in parent.named_children if c.type == outer.type) != 1:
                    break
                sig_node = parent
            outer = parent
            parent = outer.parent
        start = outer
        prev = outer.prev_named_sibling
        while prev is not None and prev.type in self.spec.prefix_siblings:
            start = prev
            prev = prev.prev_named_sibling
        return Unit(
            node=node,
            kind=kind,
            parts=parts,
            start_byte=start.start_byte,
            end_byte=outer.end_byte,
            start_line=start.start_point.row + 1,
            end_line=_end_line(outer),
            start_column=start.start_point.column,
            sig_start=sig_node.start_byte,
        )

    def _nest(self) -> None:
        units = self.units
        stack: list[int] = []
        for i, unit in enumerate(units):
            while stack and units[stack[-1]].end_byte <= unit.start_byte:
                stack.pop()
            if stack:
                unit.container = stack[-1]
                units[stack[-1]].children.append(i)
            stack.append(i)

    def _file_scopes(self, nodes: list[Any]) -> tuple[list[int], list[list[str]]]:
        scopes = []
        for node in nodes:
            parts = _name_field(node, self.src) or _first_name_child(node, self.src)
            if parts:
                scopes.append((node.start_byte, [p for x in parts for p in x.split(".") if p]))
        scopes.sort(key=lambda s: s[0])
        return [s[0] for s in scopes], [s[1] for s in scopes]

    def _name_units(self, scope_nodes: list[Any]) -> None:
        """Final kinds, qualified names, parents, signatures and docstrings."""
        units = self.units
        scope_starts, scope_parts = self._file_scopes(scope_nodes)
        by_qn: dict[str, int] = {}
        for i, unit in enumerate(units):
            if unit.container is None:
                k = bisect_right(scope_starts, unit.start_byte) - 1
                base = scope_parts[k] if k >= 0 else []
                container = None
            else:
                container = units[unit.container]
                base = container.scope
            unit.kind = self._member_kind(unit, container)
            unit.scope = [*base, *unit.parts]
            unit.base_qn = join_name(self.prefix, *unit.scope)
            unit.logical_parent = unit.container
            if unit.kind in CLASS_LIKE_KINDS or unit.kind in SCOPE_KINDS:
                by_qn.setdefault(unit.base_qn, i)
        names = QualifiedNames()
        for unit in units:
            if len(unit.parts) > 1 and unit.kind in ("function", "method"):
                self._attach_to_owner(unit, by_qn)
            unit.qn = names.claim(unit.base_qn)
        for unit in units:
            if unit.logical_parent is not None:
                unit.parent_qn = units[unit.logical_parent].qn
            unit.signature = self._signature(unit)
            unit.docstring = self._docstring(unit)

    def _member_kind(self, unit: Unit, container: Unit | None) -> str:
        """``function`` directly inside a class-like unit is a method or constructor."""
        if container is None or container.kind not in CLASS_LIKE_KINDS:
            return unit.kind
        if unit.kind not in ("function", "method"):
            return unit.kind
        name = unit.parts[-1]
        constructors = self.spec.constructors
        if name in constructors or (
            CLASS_NAME_CONSTRUCTOR in constructors and name == container.parts[-1]
        ):
            return "constructor"
        return "method"

    def _attach_to_owner(self, unit: Unit, by_qn: dict[str, int]) -> None:
        """A function named with its owner (Go receiver, ``A::f``, ``A.prototype.f``)."""
        owner = by_qn.get(unit.base_qn.rsplit(".", 1)[0])
        if owner is not None:
            unit.logical_parent = owner
        owner_kind = self.units[owner].kind if owner is not None else None
        if unit.kind == "function" and owner_kind not in SCOPE_KINDS:
            unit.kind = "method"
        if CLASS_NAME_CONSTRUCTOR in self.spec.constructors and unit.parts[-1] == unit.parts[-2]:
            unit.kind = "constructor"

    def _signature(self, unit: Unit) -> str:
        node = unit.node
        body: Any = node
        for field in self.spec.body.get(node.type, "body").split("."):
            body = body.child_by_field_name(field)
            if body is None:
                break
        src = self.src
        start = unit.sig_start
        if body is not None and body.start_byte > start:
            end = body.start_byte
        else:
            limit = min(node.end_byte, start + _SIGNATURE_SCAN)
            brace = src.find(b"{", start, limit)
            newline = src.find(b"\n", start, limit)
            end = brace if brace >= 0 else (newline if newline >= 0 else limit)
        end = min(end, start + _SIGNATURE_SCAN)
        return signature_text(self._without_comments(start, end).decode("utf-8", "replace"))

    def _without_comments(self, start: int, end: int) -> bytes:
        """Source bytes of ``[start, end)`` with the comments inside removed."""
        k = bisect_right(self.comment_starts, start - 1)
        if k >= len(self.comment_starts) or self.comment_starts[k] >= end:
            return self.src[start:end]
        pieces = []
        cursor = start
        while k < len(self.comment_starts) and self.comment_starts[k] < end:
            pieces.append(self.src[cursor : self.comment_starts[k]])
            cursor = max(cursor, self.comment_ends[k])
            k += 1
        if cursor < end:
            pieces.append(self.src[cursor:end])
        return b" ".join(pieces)

    def _docstring(self, unit: Unit) -> str:
        if self.spec.docstring == "python":
            doc = self._python_docstring(unit.node.child_by_field_name("body"))
            if doc is not None:
                return doc[1]
        return unit.leading_comment

    def _python_docstring(self, body: Any) -> tuple[int, str] | None:
        child = body.named_child(0) if body is not None and body.named_child_count else None
        while child is not None and child.type == "comment":
            child = child.next_named_sibling
        if child is None or child.type != "expression_statement" or child.named_child_count != 1:
            return None
        string = child.named_child(0)
        if string is None or string.type != "string":
            return None
        return string.start_point.row + 1, python_string_body(node_text(self.src, string))

    # -- imports, comments, calls, branches ------------------------------------

    def _mark(self, first: int, last: int) -> None:
        if first <= last:
            self.trivial[first : last + 1] = b"\x01" * (last - first + 1)

    def _collect_imports(self, caps: dict[str, list[Any]]) -> None:
        # In source order: tree-sitter gives a capture's nodes in the order their matches
        # complete, which is not it and varied between runs, and an import's extractor
        # binds its aliases (a name bound twice, `try: from _c import d as x` / `except:
        # from c import d as x`, keeps the later one).
        found = [
            (node.start_byte, node, EXTRACTORS[extractor_name])
            for capture, extractor_name in self.grammar.import_rules.items()
            for node in caps.get(capture, ())
        ]
        found.sort(key=lambda f: f[0])
        for pos, node, extractor in found:
            self._mark(node.start_point.row + 1, _end_line(node))
            self.imports.extend((pos, name) for name in extractor(self.import_ctx, node))

    def _collect_comments(self, nodes: list[Any]) -> None:
        """Mark comment-only lines and attach leading comment blocks to units."""
        src = self.src
        by_end: dict[int, tuple[int, int, Any]] = {}
        spans = sorted((node.start_byte, node.end_byte) for node in nodes)
        self.comment_starts = [a for a, _ in spans]
        self.comment_ends = [b for _, b in spans]
        for node in nodes:
            column = node.start_point.column
            if node.start_byte > self.index.code_starts[node.start_point.row]:
                continue  # a trailing comment after code
            first = node.start_point.row + 1
            last = _end_line(node)
            self._mark(first, last)
            by_end[last] = (first, column, node)
        if not by_end:
            return
        for unit in self.units:
            line = unit.start_line - 1
            texts: list[str] = []
            while line in by_end:
                first, column, node = by_end[line]
                if column > unit.start_column:
                    break
                texts.append(node_text(src, node))
                line = first - 1
            if texts:
                texts.reverse()
                unit.leading_comment = clean_comment(texts)

    def _owner(self, starts: list[int], pos: int) -> int:
        units = self.units
        idx = bisect_right(starts, pos) - 1
        while idx >= 0 and units[idx].end_byte <= pos:
            container = units[idx].container
            idx = -1 if container is None else container
        return idx

    def _callee(self, node: Any, rule: CallRule) -> str:
        if rule.field is not None:
            target = node.child_by_field_name(rule.field)
            if target is None:
                return ""
            start, end = target.start_byte, target.end_byte
        else:
            target = node
            start, end = node.start_byte, node.end_byte
            for field in rule.before:
                child = node.child_by_field_name(field)
                if child is not None and child.start_byte < end:
                    end = child.start_byte
        if end - start > MAX_CALLEE_BYTES:
            short = None
            if rule.fallback is not None:
                short = node.child_by_field_name(rule.fallback)
            if short is None:
                for field in _FALLBACK_NAME_FIELDS:
                    short = target.child_by_field_name(field)
                    if short is not None:
                        break
            if short is None or short.end_byte - short.start_byte > MAX_CALLEE_BYTES:
                return ""
            start, end = short.start_byte, short.end_byte
        name = normalize_callee(self.src[start:end].decode("utf-8", "replace"))
        return name + rule.suffix if name else ""

    def _collect_calls(self, caps: dict[str, list[Any]]) -> None:
        import_calls = self.spec.import_calls
        found: list[tuple[int, int, str]] = []
        for capture, rule in self.grammar.call_rules.items():
            for node in caps.get(capture, ()):
                callee = self._callee(node, rule)
                if not callee:
                    continue
                pos = node.start_byte
                found.append((pos, node.start_point.row + 1, callee))
                if callee in import_calls:
                    target = call_argument_import(self.import_ctx, node)
                    if target:
                        self.imports.append((pos, target))
                        self._mark(node.start_point.row + 1, _end_line(node))
        found.sort()
        starts = [u.start_byte for u in self.units]
        units = self.units
        for pos, line, callee in found:
            idx = self._owner(starts, pos)
            if idx < 0:
                self.module_calls.append((line, callee))
            else:
                units[idx].calls.append((line, callee))

    def _collect_branches(self, nodes: list[Any]) -> None:
        starts = [u.start_byte for u in self.units]
        units = self.units
        for node in nodes:
            line = node.start_point.row + 1
            idx = self._owner(starts, node.start_byte)
            if idx < 0:
                self.module_branches.append(line)
            else:
                units[idx].branches.append(line)

    def _mark_top_level(self, root: Any) -> None:
        trivial = self.spec.trivial
        if trivial:
            for child in root.named_children:
                if child.type in trivial:
                    self._mark(child.start_point.row + 1, _end_line(child))
        if self.spec.docstring == "python":
            self.module_doc = self._python_docstring(root)


def chunk_code(
    path: str, text: str, language: str, max_lines: int
) -> tuple[tuple[str, ...], list[Chunk], tuple[tuple[str, str, str], ...]]:
    """Imports, chunks and import bindings (name, module as written, member) of a file in a
    tree-sitter supported language.

    Raises ``ImportError`` when the grammar package is not installed.
    """
    return _FileWalker(path, text, language, max_lines).run()
