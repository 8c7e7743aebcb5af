"""Chunker behaviour that is not tied to one fixture file."""

from __future__ import annotations

import os
import sysconfig
import time
from pathlib import Path

import pytest

from mnemo_indexer.chunking import (
    SUPPORTED_LANGUAGES,
    Chunk,
    ParsedFile,
    ParseError,
    detect_language,
    module_path,
    parse_file,
    split_identifier,
)
from mnemo_indexer.chunking.names import expand_use_tree, normalize_callee


def _by_qn(parsed: ParsedFile) -> dict[str, Chunk]:
    return {chunk.qualified_name: chunk for chunk in parsed.chunks}


def _covered(chunks: list[Chunk] | tuple[Chunk, ...]) -> set[int]:
    lines: set[int] = set()
    for chunk in chunks:
        lines.update(range(chunk.start_line, chunk.end_line + 1))
    return lines


# ---------------------------------------------------------------------------
# helpers


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("json/decoder.py", "json.decoder"),
        ("pkg/__init__.py", "pkg"),
        ("src/lib/index.ts", "src.lib"),
        ("src/lib/index.js", "src.lib"),
        ("src/net/mod.rs", "src.net"),
        ("src/mod.py", "src.mod"),
        ("./a/b/c.go", "a.b.c"),
        ("a\\b\\c.py", "a.b.c"),
        ("Main.java", "Main"),
        ("README", "README"),
        ("__init__.py", ""),
        ("docs/guide.md", "docs.guide"),
        ("lib/jquery.min.js", "lib.jquery.min"),
    ],
)
def test_module_path(path, expected):
    assert module_path(path) == expected


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("parseHTTPResponse_v2", ["parse", "http", "response", "v2"]),
        ("snake_case_name", ["snake", "case", "name"]),
        ("CamelCase", ["camel", "case"]),
        ("HTTPServer", ["http", "server"]),
        ("__init__", ["init"]),
        ("HTTP2Server", ["http2", "server"]),
        ("base64Encode", ["base64", "encode"]),
        ("x", ["x"]),
        ("SCREAMING_CASE", ["screaming", "case"]),
        ("kebab-case-name", ["kebab", "case", "name"]),
        ("", []),
        ("123", ["123"]),
        ("ÉcoleNormale", ["école", "normale"]),
        # Words never run across a separator, nor look ahead through one.
        ("ABC_Def", ["abc", "def"]),
        ("HTTP.Server2go", ["http", "server2", "go"]),
        ("a-B C\tdE", ["a", "b", "c", "d", "e"]),
        ("x__Yz$QRs", ["x", "yz", "q", "rs"]),
        ("IOError!ABCd", ["io", "error", "ab", "cd"]),
        ("ÆØÅbc_Ünder", ["æøåbc", "ünder"]),
    ],
)
def test_split_identifier(name, words):
    assert split_identifier(name) == words


@pytest.mark.parametrize(
    ("path", "content", "language"),
    [
        ("a.py", None, "python"),
        ("a.pyi", None, "python"),
        ("a.js", None, "javascript"),
        ("a.mjs", None, "javascript"),
        ("a.cjs", None, "javascript"),
        ("a.jsx", None, "javascript"),
        ("a.ts", None, "typescript"),
        ("a.mts", None, "typescript"),
        ("a.cts", None, "typescript"),
        ("a.tsx", None, "tsx"),
        ("a.go", None, "go"),
        ("a.rs", None, "rust"),
        ("A.java", None, "java"),
        ("a.c", None, "c"),
        ("a.h", None, "c"),
        ("a.cc", None, "cpp"),
        ("a.cpp", None, "cpp"),
        ("a.cxx", None, "cpp"),
        ("a.hpp", None, "cpp"),
        ("a.hh", None, "cpp"),
        ("a.hxx", None, "cpp"),
        ("a.rb", None, "ruby"),
        ("a.cs", None, "csharp"),
        ("a.php", None, "php"),
        ("README.md", None, "markdown"),
        ("a.markdown", None, "markdown"),
        ("NOTES.TXT", None, "text"),
        ("a.rst", None, "text"),
        ("pyproject.toml", None, "text"),
        ("a.yaml", None, "text"),
        ("a.yml", None, "text"),
        ("a.json", None, "text"),
        ("setup.cfg", None, "text"),
        ("a.ini", None, "text"),
        ("run.sh", None, "text"),
        ("q.sql", None, "text"),
        ("index.html", None, "text"),
        ("site.css", None, "text"),
        ("Makefile", None, "text"),
        ("Dockerfile", None, "text"),
        (".gitignore", None, "text"),
        ("Gemfile", None, "ruby"),
        ("image.png", None, None),
        ("archive.tar.gz", None, None),
        ("noext", None, None),
        ("noext", "#!/usr/bin/env python3\nprint(1)\n", "python"),
        ("noext", "#!/bin/bash\necho hi\n", "text"),
        ("noext", "just words", None),
        ("a.py", "x = 1\x00\x00", None),
        ("dir.d/file.py", None, "python"),
    ],
)
def test_detect_language(path, content, language):
    assert detect_language(path, content) == language


def test_supported_languages():
    assert {
        "python",
        "javascript",
        "typescript",
        "tsx",
        "go",
        "rust",
        "java",
        "c",
        "cpp",
        "ruby",
        "csharp",
        "php",
        "markdown",
        "text",
    } == SUPPORTED_LANGUAGES


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("self.scan_once", "self.scan_once"),
        ("json.loads", "json.loads"),
        ("foo", "foo"),
        ("a.b().c", "a.b.c"),
        ("Foo::new", "Foo.new"),
        ("Vec::<u8>::new", "Vec.new"),
        ("$this->log", "$this.log"),
        ("std::make_unique<Widget>", "std.make_unique"),
        ("new Foo", "Foo"),
        ("obj?.method", "obj.method"),
        ("handlers[0]", "handlers"),
        ("super().__init__", "super.__init__"),
        ("(a || b)", ""),
        ("a\n  .b", "a.b"),
    ],
)
def test_normalize_callee(raw, expected):
    assert normalize_callee(raw) == expected


@pytest.mark.parametrize(
    ("tree", "sep", "expected"),
    [
        ("std::collections::HashMap", "::", ["std.collections.HashMap"]),
        ("std::fmt::{self, Display}", "::", ["std.fmt", "std.fmt.Display"]),
        (
            "crate::a::{b, c::{d, e as f}, g::*}",
            "::",
            ["crate.a.b", "crate.a.c.d", "crate.a.c.e", "crate.a.g.*"],
        ),
        ("super::h as i", "::", ["super.h"]),
        ("App\\{Foo, Bar as B}", "\\", ["App.Foo", "App.Bar"]),
    ],
)
def test_expand_use_tree(tree, sep, expected):
    assert expand_use_tree(tree, sep) == expected


# ---------------------------------------------------------------------------
# imports


@pytest.mark.parametrize(
    ("path", "source", "imports"),
    [
        ("pkg/sub/a.py", "from .m import f\n", ("pkg.sub.m.f",)),
        ("pkg/sub/a.py", "from . import x, y\n", ("pkg.sub.x", "pkg.sub.y")),
        ("pkg/sub/a.py", "from ..up import g as h\n", ("pkg.up.g",)),
        ("pkg/sub/__init__.py", "from .m import f\n", ("pkg.sub.m.f",)),
        ("pkg/sub/__init__.py", "from .. import z\n", ("pkg.z",)),
        ("pkg/a.py", "from ....far import q\n", ("far.q",)),
        ("a.py", "import a.b as c, d\n", ("a.b", "d")),
        ("a.py", "from m import *\n", ("m.*",)),
        ("a.py", "from __future__ import annotations\n", ("__future__.annotations",)),
        ("a.py", "def f():\n    import os\n    return os\n", ("os",)),
        ("a.ts", 'import fs = require("fs");\nexport * from "./all";\n', ("fs", "./all")),
        ("a.js", 'const x = await import("./lazy");\n', ("./lazy",)),
        ("a.rs", "extern crate serde;\nuse super::h as i;\n", ("serde", "super.h")),
        ("a.cs", "using Alias = A.B.C;\nglobal using D.E;\n", ("A.B.C", "D.E")),
        ("a.php", "<?php\nuse App\\{Foo, Bar as B};\n", ("App.Foo", "App.Bar")),
        (
            "A.java",
            "import static java.lang.Math.max;\nimport java.util.*;\n",
            ("java.lang.Math.max", "java.util.*"),
        ),
        ("a.go", 'package a\nimport "os"\n', ("os",)),
        ("a.rb", "require_relative '../x'\n", ("../x",)),
    ],
)
def test_imports(path, source, imports):
    assert parse_file(path, source).imports == imports


# ---------------------------------------------------------------------------
# splitting


def _long_function(lines: int) -> str:
    body = [f"    x{i} = helper_{i % 7}(x{i - 1 if i else 0})" for i in range(lines - 2)]
    return "def huge(a):\n" + "\n".join(body) + "\n    return a\n"


def test_oversized_function_is_split_without_losing_lines():
    source = _long_function(500)
    parsed = parse_file("big.py", source, max_chunk_lines=200)
    pieces = [c for c in parsed.chunks if c.name == "huge"]
    assert [c.qualified_name for c in pieces] == ["big.huge", "big.huge@2", "big.huge@3"]
    assert all(c.kind == "function" for c in pieces)
    assert all(c.line_count <= 200 for c in pieces)
    assert [(c.start_line, c.end_line) for c in pieces] == [(1, 200), (201, 400), (401, 500)]
    assert _covered(pieces) == set(range(1, 501))
    lines = source.split("\n")
    assert "\n".join(c.content for c in pieces) == "\n".join(lines[:500])
    assert pieces[0].signature == "def huge(a)"
    assert pieces[2].signature == "def huge(a)"
    assert set(pieces[0].calls) == {f"helper_{i}" for i in range(7)}
    assert len(parsed.chunks) == 3


def _big_class(methods: int, method_lines: int) -> str:
    out = ["class Big(Base):", '    """A large class."""', "    limit = compute_limit()", ""]
    for m in range(methods):
        out.append(f"    # method number {m}")
        out.append(f"    def m{m}(self, v):")
        out.extend(f"        v = step_{m}(v, {k})" for k in range(method_lines - 2))
        out.append("        return v")
        out.append(f"    attr_{m} = make_attr({m})")
        out.append("")
    return "\n".join(out) + "\n"


def test_oversized_class_keeps_own_lines_and_method_chunks():
    source = _big_class(methods=30, method_lines=10)
    lines = source.split("\n")
    total = len(lines) - 1
    parsed = parse_file("big.py", source, max_chunk_lines=40)
    chunks = _by_qn(parsed)
    class_pieces = [c for c in parsed.chunks if c.kind == "class"]
    methods = [c for c in parsed.chunks if c.kind == "method"]
    assert len(methods) == 30
    assert all(c.parent_qualified_name == "big.Big" for c in methods)
    assert [c.qualified_name for c in class_pieces][:2] == ["big.Big", "big.Big@2"]
    assert all(c.name == "Big" for c in class_pieces)
    # the class pieces hold only lines outside the methods
    method_lines = _covered(methods)
    for piece in class_pieces:
        assert piece.content.count("\n") + 1 <= 40
        for text in piece.content.split("\n"):
            assert "step_" not in text
    class_text = "\n".join(c.content for c in class_pieces)
    assert "limit = compute_limit()" in class_text
    assert all(f"attr_{m} = make_attr({m})" in class_text for m in range(30))
    assert class_pieces[0].docstring == "A large class."
    assert class_pieces[1].docstring == ""
    # calls: the class only has its own
    class_calls = {call for c in class_pieces for call in c.calls}
    assert class_calls == {"compute_limit", "make_attr"}
    assert chunks["big.Big.m3"].calls == ("step_3",)
    # no line lost
    non_blank = {n for n, text in enumerate(lines[:total], 1) if text.strip()}
    assert non_blank <= _covered(class_pieces) | method_lines
    own_lines = sum(c.content.count("\n") + 1 for c in class_pieces)
    assert own_lines < total - len(method_lines) + 1


def test_small_class_chunk_holds_full_text():
    source = _big_class(methods=2, method_lines=4)
    parsed = parse_file("small.py", source)
    cls = _by_qn(parsed)["small.Big"]
    assert cls.start_line == 1
    assert cls.content == source.rstrip("\n")
    assert cls.calls == ("compute_limit", "make_attr")


def test_oversized_module_code_is_split():
    source = "\n".join(f"VALUE_{i} = compute({i})" for i in range(450)) + "\n"
    parsed = parse_file("consts.py", source, max_chunk_lines=200)
    assert [(c.kind, c.qualified_name, c.start_line, c.end_line) for c in parsed.chunks] == [
        ("module", "consts", 1, 200),
        ("module", "consts@2", 201, 400),
        ("module", "consts@3", 401, 450),
    ]
    assert parsed.chunks[0].calls == ("compute",)


def test_oversized_markdown_section_is_windowed():
    body = "\n".join(f"line {i}" for i in range(300))
    parsed = parse_file(
        "doc.md", f"# Title\n{body}\n", max_chunk_lines=100, window_lines=60, window_overlap=10
    )
    spans = [(c.qualified_name, c.start_line, c.end_line) for c in parsed.chunks]
    assert spans[0] == ("doc.title", 1, 60)
    assert spans[1] == ("doc.title@2", 51, 110)
    assert spans[-1][2] == 301
    assert _covered(parsed.chunks) == set(range(1, 302))
    assert all(c.name == "Title" and c.kind == "section" for c in parsed.chunks)


# ---------------------------------------------------------------------------
# robustness


@pytest.mark.parametrize(
    ("path", "source", "expected_qn"),
    [
        (
            "bad.py",
            "def ok(a):\n    return a\n\ndef broken(:\n    pass\n\nclass K:\n"
            "    def m(self):\n        return 1\n",
            {"bad.ok", "bad.K", "bad.K.m"},
        ),
        ("bad.js", "function ok() { return 1; }\nfunction broken( {\n", {"bad.ok"}),
        ("bad.go", "package x\nfunc Ok() int { return 1 }\nfunc Bad( {\n", {"bad.Ok"}),
        ("bad.java", "class A { void ok() { f(); } void bad( { }\n", {"A"}),
    ],
)
def test_syntax_errors_still_yield_chunks(path, source, expected_qn):
    parsed = parse_file(path, source)
    assert expected_qn <= {c.qualified_name for c in parsed.chunks}


def test_nul_content_raises_parse_error():
    with pytest.raises(ParseError) as excinfo:
        parse_file("a.py", "x = 1\x00")
    assert "NUL" in excinfo.value.reason


@pytest.mark.parametrize("language", ["cobol", "../../x", ""])
def test_unknown_language_hint_raises_parse_error(language):
    with pytest.raises(ParseError) as excinfo:
        parse_file("a.py", "text", language)
    assert "unsupported language" in excinfo.value.reason
    assert "a.py" not in excinfo.value.reason  # the caller puts the path next to it
    assert "python" in excinfo.value.reason  # and the accepted ones are named


@pytest.mark.parametrize(
    "path",
    ["semver/range.bnf", "grammar.peg", "blob.bin", "LICENSE-MIT", "scripts/run", "x.weird"],
)
def test_unknown_text_files_become_line_windows(path):
    text = "".join(f"rule{i} ::= a | b\n" for i in range(130))
    parsed = parse_file(path, text)
    assert parsed.language == "text"
    assert {c.kind for c in parsed.chunks} == {"window"}
    assert [(c.start_line, c.end_line) for c in parsed.chunks] == [(1, 60), (51, 110), (101, 130)]
    assert parsed.chunks[0].content.startswith("rule0 ::= a | b\nrule1")


@pytest.mark.parametrize(
    "options",
    [{"max_chunk_lines": 0}, {"window_lines": 0}, {"window_lines": 5, "window_overlap": 5}],
)
def test_invalid_options(options):
    with pytest.raises(ValueError):
        parse_file("a.py", "x = 1\n", **options)


def test_explicit_language_overrides_detection():
    parsed = parse_file("script", "def f():\n    return 1\n", "python")
    assert parsed.language == "python"
    assert [c.qualified_name for c in parsed.chunks] == ["script.f"]


@pytest.mark.parametrize("source", ["", "\n\n", "   \n"])
def test_empty_files(source):
    for path in ("e.py", "e.md", "e.txt", "e.rs"):
        parsed = parse_file(path, source)
        assert parsed.chunks == ()
        assert parsed.imports == ()


def test_import_only_file_has_no_chunks():
    parsed = parse_file("m.py", "# comment\nimport os\nfrom a import b\n")
    assert parsed.chunks == ()
    assert parsed.imports == ("os", "a.b")


def test_crlf_and_no_trailing_newline():
    source = "def f(x):\r\n    return g(x)\r\n\r\nclass A:\r\n    pass"
    parsed = parse_file("w.py", source)
    chunks = _by_qn(parsed)
    assert (chunks["w.f"].start_line, chunks["w.f"].end_line) == (1, 2)
    assert chunks["w.f"].content == "def f(x):\r\n    return g(x)\r"
    assert chunks["w.f"].calls == ("g",)
    assert (chunks["w.A"].start_line, chunks["w.A"].end_line) == (4, 5)


def test_duplicate_names_get_unique_qualified_names():
    source = (
        "class P:\n"
        "    @property\n    def x(self):\n        return self._x\n\n"
        "    @x.setter\n    def x(self, v):\n        self._x = v\n"
    )
    parsed = parse_file("p.py", source)
    assert [c.qualified_name for c in parsed.chunks] == ["p.P", "p.P.x", "p.P.x#2"]
    assert parsed.chunks[1].start_line == 2  # decorators belong to the function


def test_nested_functions_and_calls_attribution():
    source = (
        "def outer(a):\n"
        "    if a and ready():\n"
        "        log(a)\n"
        "    def inner(b):\n"
        "        return transform(b) if b else None\n"
        "    return inner(a)\n"
    )
    chunks = _by_qn(parse_file("n.py", source))
    assert chunks["n.outer"].calls == ("ready", "log", "inner")
    assert chunks["n.outer"].complexity == 3
    assert chunks["n.outer.inner"].calls == ("transform",)
    assert chunks["n.outer.inner"].complexity == 2
    assert chunks["n.outer.inner"].parent_qualified_name == "n.outer"
    assert chunks["n.outer.inner"].kind == "function"


def test_go_method_without_local_type_has_no_parent():
    parsed = parse_file("x.go", "package x\n\nfunc (c *Client) Do() error {\n\treturn nil\n}\n")
    (chunk,) = parsed.chunks
    assert (chunk.kind, chunk.qualified_name, chunk.parent_qualified_name) == (
        "method",
        "x.Client.Do",
        None,
    )


def test_file_scoped_namespaces_prefix_names():
    # Java, C# and PHP qualify by the declared package or namespace alone, never by the path.
    cs = parse_file("src/F.cs", "namespace Foo.Bar;\npublic class X { void M() { } }\n")
    assert {c.qualified_name for c in cs.chunks} == {"Foo.Bar.X", "Foo.Bar.X.M"}
    php = parse_file("lib/f.php", "<?php\nnamespace A\\B;\nfunction g() { return 1; }\n")
    assert [c.qualified_name for c in php.chunks] == ["A.B.g"]


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        # The audit's case: path module + namespace + class used to give
        # php.Glob.google.appengine.runtime.Glob.doGlob.
        (
            "php/Glob.php",
            "<?php\nnamespace google\\appengine\\runtime;\n"
            "final class Glob {\n  public static function doGlob($p) { return 1; }\n}\n",
            {"google.appengine.runtime.Glob", "google.appengine.runtime.Glob.doGlob"},
        ),
        (
            "src/main/java/com/acme/Util.java",
            "package com.acme;\n\npublic class Util {\n  static int one() { return 1; }\n}\n",
            {"com.acme.Util", "com.acme.Util.one"},
        ),
        (
            "Bank/Ledger.cs",
            "namespace Bank { class Ledger { void Add() { } } }\n",
            {"Bank", "Bank.Ledger", "Bank.Ledger.Add"},
        ),
        # Without a package or namespace: the global one, as the language has it.
        ("app/Main.java", "class Main { void run() { } }\n", {"Main", "Main.run"}),
        ("web/helpers.php", "<?php\nfunction h() { return 1; }\n", {"h"}),
    ],
)
def test_namespace_languages_never_repeat_names(path, source, expected):
    parsed = parse_file(path, source)
    assert {c.qualified_name for c in parsed.chunks if c.kind != "module"} == expected


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        (
            "__init__.py",
            "from .message import Message\n\ndef message_from_string(s):\n    return s\n",
            {("function", "message_from_string")},
        ),
        ("index.js", "export function main() { return 1; }\n", {("function", "main")}),
        ("mod.rs", "pub fn run() {}\n", {("function", "run")}),
        (
            "__init__.py",
            "X = compute()\n\nclass K:\n    def m(self):\n        return 1\n",
            {("module", "__init__.py"), ("class", "K"), ("method", "K.m")},
        ),
    ],
)
def test_root_entry_file_names_are_top_level(path, source, expected):
    """A root __init__.py (the repository is the package) never yields __init__.x."""
    parsed = parse_file(path, source)
    assert {(c.kind, c.qualified_name) for c in parsed.chunks} == expected
    module = [c for c in parsed.chunks if c.kind == "module"]
    assert all(c.name == path for c in module)


# ---------------------------------------------------------------------------
# minified code: a chunk is bounded by its unit, not by the line it sits on


def _minified(size: int) -> str:
    unit = "function a(){return 1};class K{m(){return this.n}static s(x){return x*2}};"
    return unit * (size // len(unit))


def test_minified_file_chunks_are_linear_in_its_size():
    """Audit: `function a(){return 1};` x 3000 (69 KB) made 3000 chunks of 207 MB, because
    every unit on the line carried the whole line."""
    text = _minified(200_000)
    started = time.perf_counter()
    parsed = parse_file("dist/app.min.js", text)
    elapsed = time.perf_counter() - started
    assert len(parsed.chunks) > 10_000
    total = sum(len(c.content) for c in parsed.chunks)
    # Each byte is in its unit and, for methods, in their class: at most twice.
    assert total <= 2 * len(text), total
    assert elapsed < 10, elapsed
    # Far into the line, every chunk is exactly its unit.
    fn, cls, method, static = parsed.chunks[400:404]
    assert (fn.kind, fn.content) == ("function", "function a(){return 1}")
    assert (cls.kind, cls.content) == (
        "class",
        "class K{m(){return this.n}static s(x){return x*2}}",
    )
    assert (method.kind, method.content) == ("method", "m(){return this.n}")
    assert (static.content, static.start_line, static.end_line) == ("static s(x){return x*2}", 1, 1)
    assert all(c.content for c in parsed.chunks)


def test_units_sharing_lines_with_little_text_keep_whole_lines():
    js = (
        "module.exports.encodeStream = module.exports.decodeStream = function () {\n"
        '    throw new Error("no streams");\n'
        "}; // streaming is off\n"
    )
    (chunk,) = [c for c in parse_file("i.js", js).chunks if c.kind == "function"]
    assert chunk.content == js.rstrip("\n")  # whole lines, as before
    rb = "class A\n  private def secret\n    1\n  end\nend\n"
    method = next(c for c in parse_file("a.rb", rb).chunks if c.kind == "method")
    assert method.content == "  private def secret\n    1\n  end"


def test_a_long_shared_line_is_cut_at_the_unit():
    head = "var x = [" + ", ".join(str(i) for i in range(100)) + "]; function f() {\n"
    js = head + "  return 1;\n} " + "var y = 2; " * 20 + "\n"
    (chunk,) = [c for c in parse_file("m.js", js).chunks if c.kind == "function"]
    assert chunk.content == "function f() {\n  return 1;\n}"
    assert (chunk.start_line, chunk.end_line) == (1, 3)


def test_parsing_is_deterministic():
    source = _big_class(methods=12, method_lines=6)
    first = parse_file("d.py", source, max_chunk_lines=30)
    second = parse_file("d.py", source, max_chunk_lines=30)
    assert first == second


# ---------------------------------------------------------------------------
# the standard library


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
    files: list[Path] = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        files.extend(Path(directory, n) for n in sorted(names) if n.endswith(".py"))
    return files


def test_parse_the_standard_library():
    root = Path(sysconfig.get_paths()["stdlib"])
    files = _stdlib_files()
    assert len(files) > 100
    total_chunks = 0
    for file in files:
        text = file.read_text(encoding="utf-8", errors="surrogateescape")
        if "\x00" in text:
            continue
        parsed = parse_file(file.relative_to(root).as_posix(), text)
        total_chunks += len(parsed.chunks)
        qns = [c.qualified_name for c in parsed.chunks]
        assert len(qns) == len(set(qns)), file
    assert total_chunks > len(files)

    decoder = root / "json" / "decoder.py"
    parsed = parse_file("json/decoder.py", decoder.read_text(encoding="utf-8"))
    chunks = _by_qn(parsed)
    raw_decode = chunks["json.decoder.JSONDecoder.raw_decode"]
    assert raw_decode.kind == "method"
    assert raw_decode.signature == "def raw_decode(self, s, idx=0)"
    assert "self.scan_once" in raw_decode.calls
    assert raw_decode.parent_qualified_name == "json.decoder.JSONDecoder"
    assert raw_decode.docstring.startswith("Decode a JSON document from ``s``")
    assert "re" in parsed.imports
    assert "json.scanner" in parsed.imports


def test_missing_grammar_falls_back_to_windows(monkeypatch):
    import mnemo_indexer.chunking.parse as parse_module

    def no_grammar(*args, **kwargs):
        raise ImportError("tree_sitter_python is not installed")

    monkeypatch.setattr(parse_module, "chunk_code", no_grammar)
    source = "\n".join(f"x{i} = {i}" for i in range(25)) + "\n"
    parsed = parse_file("m.py", source, window_lines=10, window_overlap=2)
    assert parsed.language == "python"
    assert [(c.kind, c.start_line, c.end_line) for c in parsed.chunks] == [
        ("window", 1, 10),
        ("window", 9, 18),
        ("window", 17, 25),
    ]


def test_parsing_from_threads_matches_serial():
    from concurrent.futures import ThreadPoolExecutor

    sources = [(f"t{i}.py", _big_class(methods=i + 1, method_lines=5)) for i in range(8)]
    serial = [parse_file(path, text) for path, text in sources]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda item: parse_file(*item), sources))
    assert threaded == serial


def test_each_call_records_its_own_line():
    source = (
        "def outer(x):\n"  # 1
        "    a = first(x)\n"  # 2
        "    if a:\n"  # 3
        "        second(a)\n"  # 4
        "    first(a)\n"  # 5: the same callee again: its first line counts
        "    return third(\n"  # 6
        "        a)\n"
        "\n"
        "setup()\n"  # 9: module-level code
    )
    parsed = parse_file("m.py", source)
    fn = next(c for c in parsed.chunks if c.qualified_name == "m.outer")
    assert list(zip(fn.calls, fn.call_lines, strict=True)) == [
        ("first", 2),
        ("second", 4),
        ("third", 6),
    ]
    module = next(c for c in parsed.chunks if c.kind == "module")
    assert list(zip(module.calls, module.call_lines, strict=True)) == [("setup", 9)]
    from mnemo_indexer.records import edge_rows

    lines = {(e.source, e.external): e.line for e in edge_rows(parsed) if e.relationship == "calls"}
    assert lines == {
        ("m.outer", "first"): 2,
        ("m.outer", "second"): 4,
        ("m.outer", "third"): 6,
        ("m", "setup"): 9,
    }


def test_call_lines_of_split_units_follow_their_pieces():
    body = "".join(f"    step{i}()\n" for i in range(30))
    parsed = parse_file("big.py", "def big():\n" + body, max_chunk_lines=10)
    pieces = [c for c in parsed.chunks if c.qualified_name.startswith("big.big")]
    assert len(pieces) > 2
    for piece in pieces:
        for callee, line in zip(piece.calls, piece.call_lines, strict=True):
            assert piece.start_line <= line <= piece.end_line
            assert line == int(callee.removeprefix("step")) + 2


def test_a_missing_grammar_falls_back_to_windows_and_says_so_once(monkeypatch):
    import structlog

    from mnemo_indexer.chunking import parse as parse_module

    def no_grammar(*_args, **_kwargs):
        raise ImportError("No module named 'tree_sitter_python'")

    monkeypatch.setattr(parse_module, "chunk_code", no_grammar)
    parse_module._grammar_unavailable.cache_clear()
    with structlog.testing.capture_logs() as logs:
        first = parse_file("a.py", "def f():\n    return 1\n")
        second = parse_file("b.py", "x = 1\n")
    assert {c.kind for c in first.chunks + second.chunks} == {"window"}
    assert first.language == "python"
    events = [e for e in logs if e["event"] == "grammar_unavailable"]
    assert [(e["language"], e["log_level"]) for e in events] == [("python", "warning")]
    parse_module._grammar_unavailable.cache_clear()


def test_import_aliases_are_bound_in_source_order() -> None:
    """tree-sitter hands over an import pattern's matches in the order they complete, not
    the source's (here: the nested import first, the try block before the line above it),
    and a name bound twice kept whichever came last in that order: the stdlib's edges
    differed between two runs. Now the source's order, and the later binding wins."""
    src = (
        "import os as _os\n"
        "from time import monotonic as _time\n"
        "from itertools import islice as _islice, count as _count\n"
        "try:\n"
        "    from _collections import deque as _deque\n"
        "except ImportError:\n"
        "    from collections import deque as _deque\n"
        "\n"
        "def f():\n"
        "    import json as _json\n"
        "    return _deque()\n"
    )
    assert parse_file("m.py", src).aliases == (
        ("_os", "os", ""),
        ("_time", "time", "monotonic"),
        ("_islice", "itertools", "islice"),
        ("_count", "itertools", "count"),
        ("_deque", "collections", "deque"),
        ("_json", "json", ""),
    )
