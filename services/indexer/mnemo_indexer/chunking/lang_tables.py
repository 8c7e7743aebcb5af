"""Per-language node tables, as data.

Patterns are tree-sitter query S-expressions without captures; the loader
appends the capture names.  Rules are interpreted by :mod:`.treesitter`:

``units``        (pattern, kind).  Kind ``function`` becomes ``method`` (or
                 ``constructor``) when the unit sits directly in a class-like unit.
``names``        node type -> name rule (default ``name``: the ``name`` field).
                 Other rules: ``declarator`` (C-family declarator chain),
                 ``type`` (the ``type`` field, generics stripped), ``go_method``
                 (name + receiver type), ``c_tag`` (tag name or typedef name),
                 ``property`` (the ``property`` field), ``assign_left`` (left side
                 of an assignment).
``calls``        (pattern, callee rule): ``field`` = callee is that field;
                 ``field!`` = same, with ``!`` appended; ``<f1,f2`` = the text
                 before the first present field; ``|fallback`` = field used when
                 the callee text is too long.
``branches``     decision points counted by the complexity estimate.
``imports``      (pattern, extractor name) - extractors live in :mod:`.imports`.
``import_calls`` callee names whose first string argument is an import.
``comments``     comment node types (leading comment blocks become docstrings).
``scopes``       file-level namespace declarations that prefix what follows them.
``wrappers``     parent node type -> ``outer`` (widen the chunk to the parent) or
                 ``decl`` (widen chunk and signature, only if the parent declares
                 a single unit).
``prefix_siblings`` node types directly before a unit that belong to it.
``trivial``      top-level node types that, like imports and comments, do not by
                 themselves make a module-level chunk.
``body``         node type -> field path of the body (default ``body``).
``constructors`` method names that are constructors; :data:`CLASS_NAME_CONSTRUCTOR`
                 means "a method named like its class".
``path_scoped``  whether qualified names start with the file's module path. False for
                 languages whose names come from a declared package or namespace
                 (Java, C#, PHP): ``com.example.bank.Account.deposit``, never
                 ``Account.com.example.bank.Account.deposit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

CLASS_NAME_CONSTRUCTOR = "<class name>"


@dataclass(frozen=True)
class LangSpec:
    grammar: tuple[str, str]
    units: tuple[tuple[str, str], ...]
    calls: tuple[tuple[str, str], ...]
    branches: tuple[str, ...]
    imports: tuple[tuple[str, str], ...]
    comments: tuple[str, ...] = ("comment",)
    names: Mapping[str, str] = field(default_factory=dict)
    scopes: tuple[str, ...] = ()
    wrappers: Mapping[str, str] = field(default_factory=dict)
    prefix_siblings: frozenset[str] = frozenset()
    trivial: frozenset[str] = frozenset()
    body: Mapping[str, str] = field(default_factory=dict)
    docstring: str | None = None
    constructors: frozenset[str] = frozenset()
    import_calls: frozenset[str] = frozenset()
    path_scoped: bool = True


def _and_or(node: str, operators: str, field_name: str = "operator") -> str:
    ops = " ".join(f'"{op}"' for op in operators.split())
    return f"({node} {field_name}: [{ops}])"


_C_BRANCHES = (
    "(if_statement)",
    "(for_statement)",
    "(while_statement)",
    "(do_statement)",
    "(case_statement value: (_))",
    "(conditional_expression)",
    _and_or("binary_expression", "&& ||"),
)

_JS_BASE_UNITS = (
    ("[(function_declaration) (generator_function_declaration)]", "function"),
    ("(class_declaration)", "class"),
    ("(method_definition)", "method"),
    (
        "(variable_declarator value: [(arrow_function) (function_expression)"
        " (generator_function)])",
        "function",
    ),
    (
        "(assignment_expression left: (member_expression) right: [(arrow_function)"
        " (function_expression)])",
        "function",
    ),
)
_JS_UNITS = (
    *_JS_BASE_UNITS,
    ("(field_definition value: [(arrow_function) (function_expression)])", "method"),
)
_JS_CALLS = (("(call_expression)", "function"), ("(new_expression)", "constructor"))
_JS_BRANCHES = (
    "(if_statement)",
    "(for_statement)",
    "(for_in_statement)",
    "(while_statement)",
    "(do_statement)",
    "(switch_case)",
    "(catch_clause)",
    "(ternary_expression)",
    _and_or("binary_expression", "&& || ??"),
)
_JS_IMPORTS = (
    ("(import_statement)", "js_source"),
    ("(export_statement source: (_))", "js_source"),
)
_JS_NAMES = {"field_definition": "property", "assignment_expression": "assign_left"}
_JS_WRAPPERS = {
    "export_statement": "outer",
    "expression_statement": "outer",
    "lexical_declaration": "decl",
    "variable_declaration": "decl",
}
_JS_BODY = {
    "variable_declarator": "value.body",
    "assignment_expression": "right.body",
    "field_definition": "value.body",
}
_TS_UNITS = (
    *_JS_BASE_UNITS,
    ("(abstract_class_declaration)", "class"),
    ("(interface_declaration)", "interface"),
    ("(enum_declaration)", "enum"),
    ("(internal_module)", "namespace"),
    ("(module)", "module"),
    ("(public_field_definition value: [(arrow_function) (function_expression)])", "method"),
)
_TS_BODY = {**_JS_BODY, "public_field_definition": "value.body"}


def _js_like(grammar: tuple[str, str], units: tuple[tuple[str, str], ...]) -> LangSpec:
    return LangSpec(
        grammar=grammar,
        units=units,
        calls=_JS_CALLS,
        branches=_JS_BRANCHES,
        imports=_JS_IMPORTS,
        names=_JS_NAMES,
        wrappers=_JS_WRAPPERS,
        body=_TS_BODY,
        constructors=frozenset({"constructor"}),
        import_calls=frozenset({"require", "import"}),
    )


_C_UNITS = (
    ("(function_definition)", "function"),
    ("(struct_specifier body: (_))", "struct"),
    ("(union_specifier body: (_))", "struct"),
    ("(enum_specifier body: (_))", "enum"),
)
_C_NAMES = {
    "function_definition": "declarator",
    "struct_specifier": "c_tag",
    "union_specifier": "c_tag",
    "enum_specifier": "c_tag",
    "class_specifier": "c_tag",
}

SPECS: Mapping[str, LangSpec] = MappingProxyType(
    {
        "python": LangSpec(
            grammar=("tree_sitter_python", "language"),
            units=(("(function_definition)", "function"), ("(class_definition)", "class")),
            calls=(("(call)", "function"),),
            branches=(
                "(if_statement)",
                "(elif_clause)",
                "(for_statement)",
                "(while_statement)",
                "(except_clause)",
                "(case_clause)",
                "(boolean_operator)",
                "(conditional_expression)",
                "(for_in_clause)",
                "(if_clause)",
            ),
            imports=(
                ("(import_statement)", "py_import"),
                ("(import_from_statement)", "py_from"),
                ("(future_import_statement)", "py_future"),
            ),
            wrappers={"decorated_definition": "outer"},
            docstring="python",
            constructors=frozenset({"__init__"}),
        ),
        "javascript": _js_like(("tree_sitter_javascript", "language"), _JS_UNITS),
        "typescript": _js_like(("tree_sitter_typescript", "language_typescript"), _TS_UNITS),
        "tsx": _js_like(("tree_sitter_typescript", "language_tsx"), _TS_UNITS),
        "go": LangSpec(
            grammar=("tree_sitter_go", "language"),
            units=(
                ("(function_declaration)", "function"),
                ("(method_declaration)", "method"),
                ("(type_spec type: (struct_type))", "struct"),
                ("(type_spec type: (interface_type))", "interface"),
            ),
            calls=(("(call_expression)", "function"),),
            branches=(
                "(if_statement)",
                "(for_statement)",
                "(expression_case)",
                "(type_case)",
                "(communication_case)",
                _and_or("binary_expression", "&& ||"),
            ),
            imports=(("(import_spec)", "path_field"),),
            names={"method_declaration": "go_method"},
            wrappers={"type_declaration": "decl"},
            trivial=frozenset({"package_clause", "import_declaration"}),
        ),
        "rust": LangSpec(
            grammar=("tree_sitter_rust", "language"),
            units=(
                ("(function_item)", "function"),
                ("(struct_item)", "struct"),
                ("(union_item)", "struct"),
                ("(enum_item)", "enum"),
                ("(trait_item)", "trait"),
                ("(impl_item)", "impl"),
                ("(mod_item body: (_))", "module"),
            ),
            calls=(("(call_expression)", "function"), ("(macro_invocation)", "macro!")),
            branches=(
                "(if_expression)",
                "(while_expression)",
                "(for_expression)",
                "(match_arm)",
                _and_or("binary_expression", "&& ||"),
            ),
            imports=(
                ("(use_declaration)", "rust_use"),
                ("(extern_crate_declaration)", "name_field"),
            ),
            comments=("line_comment", "block_comment"),
            names={"impl_item": "type"},
            prefix_siblings=frozenset({"attribute_item"}),
            trivial=frozenset({"inner_attribute_item", "mod_item", "attribute_item"}),
        ),
        "java": LangSpec(
            grammar=("tree_sitter_java", "language"),
            units=(
                ("(class_declaration)", "class"),
                ("(record_declaration)", "class"),
                ("(interface_declaration)", "interface"),
                ("(annotation_type_declaration)", "interface"),
                ("(enum_declaration)", "enum"),
                ("(method_declaration body: (_))", "method"),
                ("(constructor_declaration)", "constructor"),
                ("(compact_constructor_declaration)", "constructor"),
            ),
            calls=(
                ("(method_invocation)", "<arguments|name"),
                ("(object_creation_expression)", "type"),
            ),
            branches=(
                "(if_statement)",
                "(for_statement)",
                "(enhanced_for_statement)",
                "(while_statement)",
                "(do_statement)",
                "(catch_clause)",
                "(ternary_expression)",
                "(switch_label (_))",
                _and_or("binary_expression", "&& ||"),
            ),
            imports=(("(import_declaration)", "java_import"),),
            comments=("line_comment", "block_comment"),
            scopes=("(package_declaration)",),
            trivial=frozenset({"package_declaration", "module_declaration"}),
            path_scoped=False,
        ),
        "c": LangSpec(
            grammar=("tree_sitter_c", "language"),
            units=_C_UNITS,
            calls=(("(call_expression)", "function"),),
            branches=_C_BRANCHES,
            imports=(("(preproc_include)", "path_field"),),
            names=_C_NAMES,
            wrappers={"type_definition": "decl"},
        ),
        "cpp": LangSpec(
            grammar=("tree_sitter_cpp", "language"),
            units=(
                *_C_UNITS,
                ("(class_specifier body: (_))", "class"),
                ("(namespace_definition)", "namespace"),
            ),
            calls=(("(call_expression)", "function"), ("(new_expression)", "type")),
            branches=(*_C_BRANCHES, "(for_range_loop)", "(catch_clause)"),
            imports=(("(preproc_include)", "path_field"),),
            names=_C_NAMES,
            wrappers={"type_definition": "decl", "template_declaration": "outer"},
            constructors=frozenset({CLASS_NAME_CONSTRUCTOR}),
        ),
        "ruby": LangSpec(
            grammar=("tree_sitter_ruby", "language"),
            units=(
                ("(class)", "class"),
                ("(module)", "module"),
                ("(method)", "function"),
                ("(singleton_method)", "function"),
            ),
            calls=(("(call)", "<arguments,block|method"),),
            branches=(
                "(if)",
                "(elsif)",
                "(unless)",
                "(while)",
                "(until)",
                "(for)",
                "(when)",
                "(in_clause)",
                "(rescue)",
                "(if_modifier)",
                "(unless_modifier)",
                "(while_modifier)",
                "(until_modifier)",
                "(rescue_modifier)",
                "(conditional)",
                _and_or("binary", "&& || and or"),
            ),
            imports=(),
            constructors=frozenset({"initialize"}),
            import_calls=frozenset({"require", "require_relative", "load", "autoload"}),
        ),
        "csharp": LangSpec(
            grammar=("tree_sitter_c_sharp", "language"),
            units=(
                ("(class_declaration)", "class"),
                ("(record_declaration)", "class"),
                ("(struct_declaration)", "struct"),
                ("(interface_declaration)", "interface"),
                ("(enum_declaration)", "enum"),
                ("(namespace_declaration)", "namespace"),
                ("(method_declaration body: (_))", "method"),
                ("(constructor_declaration)", "constructor"),
                ("(destructor_declaration)", "method"),
                ("(local_function_statement)", "function"),
            ),
            calls=(
                ("(invocation_expression)", "function"),
                ("(object_creation_expression)", "type"),
            ),
            branches=(
                "(if_statement)",
                "(for_statement)",
                "(foreach_statement)",
                "(while_statement)",
                "(do_statement)",
                "(catch_clause)",
                "(conditional_expression)",
                "(switch_section)",
                "(switch_expression_arm)",
                _and_or("binary_expression", "&& || ??"),
            ),
            imports=(("(using_directive)", "csharp_using"),),
            scopes=("(file_scoped_namespace_declaration)",),
            trivial=frozenset({"file_scoped_namespace_declaration", "extern_alias_directive"}),
            path_scoped=False,
        ),
        "php": LangSpec(
            grammar=("tree_sitter_php", "language_php"),
            units=(
                ("(class_declaration)", "class"),
                ("(interface_declaration)", "interface"),
                ("(trait_declaration)", "trait"),
                ("(enum_declaration)", "enum"),
                ("(function_definition)", "function"),
                ("(method_declaration body: (_))", "method"),
                ("(namespace_definition body: (_))", "namespace"),
            ),
            calls=(
                ("(function_call_expression)", "function"),
                (
                    "[(member_call_expression) (nullsafe_member_call_expression)"
                    " (scoped_call_expression)]",
                    "<arguments|name",
                ),
                ("(object_creation_expression)", "<arguments"),
            ),
            branches=(
                "(if_statement)",
                "(else_if_clause)",
                "(for_statement)",
                "(foreach_statement)",
                "(while_statement)",
                "(do_statement)",
                "(case_statement)",
                "(catch_clause)",
                "(conditional_expression)",
                "(match_conditional_expression)",
                _and_or("binary_expression", "&& || and or ??"),
            ),
            imports=(
                ("(namespace_use_declaration)", "php_use"),
                (
                    "[(include_expression) (include_once_expression) (require_expression)"
                    " (require_once_expression)]",
                    "first_string",
                ),
            ),
            scopes=("(namespace_definition !body)",),
            trivial=frozenset({"php_tag", "namespace_definition"}),
            constructors=frozenset({"__construct"}),
            path_scoped=False,
        ),
    }
)
