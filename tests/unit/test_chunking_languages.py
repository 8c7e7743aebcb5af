"""Per-language chunking of the sample sources in tests/fixtures/code."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mnemo_indexer.chunking import CHUNK_KINDS, Chunk, ParsedFile, parse_file
from mnemo_indexer.chunking.languages import SPECS, get_grammar
from mnemo_indexer.chunking.model import sha256_hex

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "code"


@dataclass(frozen=True)
class Focus:
    """Exact expectations for one chunk."""

    qualified_name: str
    calls: tuple[str, ...]
    signature: str
    start_line: int
    end_line: int
    docstring: str
    complexity: int | None = None
    parent: str | None = None


@dataclass(frozen=True)
class Case:
    fixture: str
    language: str
    chunks: set[tuple[str, str]]
    imports: tuple[str, ...]
    focus: tuple[Focus, ...] = field(default=())


CASES = [
    Case(
        "inventory.py",
        "python",
        {
            ("module", "inventory"),
            ("class", "inventory.Inventory"),
            ("constructor", "inventory.Inventory.__init__"),
            ("method", "inventory.Inventory.total"),
            ("method", "inventory.Inventory.restock"),
            ("method", "inventory.Inventory._log"),
            ("function", "inventory.load"),
            ("module", "inventory@2"),
        },
        ("json", "os.path", "collections.defaultdict", "storage.load_rows"),
        (
            Focus(
                "inventory.Inventory.restock",
                ("ValueError", "self._log"),
                "def restock(self, item, amount=1)",
                24,
                30,
                "Add stock, refusing negative amounts.",
                complexity=3,
                parent="inventory.Inventory",
            ),
            Focus(
                "inventory.load",
                ("Inventory", "load_rows", "inv.restock", "row.get"),
                "def load(path)",
                37,
                41,
                "Loads an inventory from disk.",
                complexity=2,
            ),
            Focus(
                "inventory.Inventory.total",
                ("sum", "self.counts.values"),
                "def total(self)",
                20,
                22,
                "",
                parent="inventory.Inventory",
            ),
            Focus(
                "inventory",
                ("int", "os.environ.get"),
                "",
                1,
                8,
                "Inventory bookkeeping for a small warehouse.",
            ),
        ),
    ),
    Case(
        "cart.js",
        "javascript",
        {
            ("module", "cart"),
            ("function", "cart.cartTotal"),
            ("class", "cart.Cart"),
            ("constructor", "cart.Cart.constructor"),
            ("method", "cart.Cart.add"),
            ("method", "cart.Cart.total"),
            ("function", "cart.emptyCart"),
            ("module", "cart@2"),
        },
        ("./format.js", "big.js", "./logger"),
        (
            Focus(
                "cart.cartTotal",
                ("items.reduce", "logger.debug", "formatPrice", "Big", "Big.times"),
                "function cartTotal(items)",
                11,
                15,
                "Computes the total of all line items, tax included.",
                complexity=2,
            ),
            Focus(
                "cart.Cart.add",
                ("Error", "this.items.push"),
                "add(item)",
                23,
                29,
                "",
                complexity=3,
                parent="cart.Cart",
            ),
            Focus("cart.emptyCart", ("Cart",), "const emptyCart = (owner)", 36, 36, ""),
        ),
    ),
    Case(
        "shapes.ts",
        "typescript",
        {
            ("interface", "shapes.Shape"),
            ("enum", "shapes.Color"),
            ("namespace", "shapes.Geometry"),
            ("function", "shapes.Geometry.distance"),
            ("class", "shapes.Circle"),
            ("constructor", "shapes.Circle.constructor"),
            ("method", "shapes.Circle.area"),
            ("function", "shapes.largest"),
        },
        ("./logger", "./geometry"),
        (
            Focus(
                "shapes.largest",
                ("s.area", "best.area"),
                "function largest(shapes: Shape[]): Shape | undefined",
                34,
                42,
                "Returns the largest shape.",
                complexity=4,
            ),
            Focus(
                "shapes.Circle.area",
                ("Logger", "log.info"),
                "area(): number",
                26,
                30,
                "",
                complexity=2,
                parent="shapes.Circle",
            ),
            Focus(
                "shapes.Geometry.distance",
                ("Math.sqrt",),
                "function distance(a: Point, b: Point): number",
                15,
                17,
                "",
                parent="shapes.Geometry",
            ),
        ),
    ),
    Case(
        "Greeting.tsx",
        "tsx",
        {
            ("module", "Greeting"),
            ("function", "Greeting.Greeting"),
            ("class", "Greeting.Banner"),
            ("method", "Greeting.Banner.render"),
            ("function", "Greeting.Footer"),
        },
        ("react", "../i18n"),
        (
            Focus(
                "Greeting.Greeting",
                ("useState", "translate", "setCount"),
                "function Greeting({ name, excited }: Props)",
                7,
                15,
                "Renders a greeting with a click counter.",
                complexity=2,
            ),
        ),
    ),
    Case(
        "server.go",
        "go",
        {
            ("interface", "server.Handler"),
            ("struct", "server.Server"),
            ("function", "server.NewServer"),
            ("method", "server.Server.Greet"),
            ("method", "server.Server.Start"),
        },
        ("fmt", "net/http", "strings"),
        (
            Focus(
                "server.Server.Greet",
                ("len", "fmt.Sprintf"),
                "func (s *Server) Greet(name string) string",
                27,
                33,
                "Greet returns a greeting and counts hits.",
                complexity=3,
                parent="server.Server",
            ),
            Focus(
                "server.Server",
                (),
                "type Server struct",
                16,
                19,
                "Server holds the listening address.",
            ),
        ),
    ),
    Case(
        "stack.rs",
        "rust",
        {
            ("struct", "stack.Stack"),
            ("trait", "stack.Sized2"),
            ("impl", "stack.Stack#2"),
            ("method", "stack.Stack.new"),
            ("method", "stack.Stack.push"),
            ("impl", "stack.Stack#3"),
            ("method", "stack.Stack.fmt"),
            ("enum", "stack.Op"),
            ("module", "stack.tests"),
            ("function", "stack.tests.counts"),
        },
        ("std.collections.HashMap", "std.fmt", "std.fmt.Display"),
        (
            Focus(
                "stack.Stack.push",
                ("self.items.len", "Err", "format!", "self.items.push", "Ok"),
                "pub fn push(&mut self, value: T) -> Result<(), String>",
                21,
                27,
                "",
                complexity=2,
                parent="stack.Stack#2",
            ),
            Focus(
                "stack.Stack.new",
                ("Vec.with_capacity",),
                "pub fn new(limit: usize) -> Self",
                17,
                19,
                "Creates an empty stack holding at most `limit` items.",
                parent="stack.Stack#2",
            ),
            Focus("stack.Stack", (), "pub struct Stack<T>", 5, 9, "A bounded stack of values."),
        ),
    ),
    Case(
        "Account.java",
        "java",
        {
            ("class", "com.example.bank.Account"),
            ("constructor", "com.example.bank.Account.Account"),
            ("method", "com.example.bank.Account.deposit"),
            ("method", "com.example.bank.Account.balance"),
            ("interface", "com.example.bank.Account.Auditor"),
            ("enum", "com.example.bank.Account.Kind"),
        },
        ("java.util.ArrayList", "java.util.List"),
        (
            Focus(
                "com.example.bank.Account.deposit",
                ("IllegalArgumentException", "log.add", "balance"),
                "public long deposit(long amount)",
                18,
                24,
                "Deposits a positive amount.",
                complexity=3,
                parent="com.example.bank.Account",
            ),
            Focus(
                "com.example.bank.Account",
                ("ArrayList",),
                "public class Account",
                9,
                35,
                "A bank account with a transaction log.",
            ),
        ),
    ),
    Case(
        "ring.c",
        "c",
        {
            ("module", "ring"),
            ("struct", "ring.Ring"),
            ("struct", "ring.stats"),
            ("module", "ring@2"),
            ("function", "ring.ring_push"),
            ("function", "ring.main"),
        },
        ("stdio.h", "stdlib.h", "ring.h"),
        (
            Focus(
                "ring.main",
                ("calloc", "ring_push", "printf", "free"),
                "int main(void)",
                32,
                41,
                "",
                complexity=2,
            ),
            Focus(
                "ring.ring_push",
                (),
                "int ring_push(Ring *r, int value)",
                21,
                30,
                "Push a value, dropping the oldest when full.",
                complexity=4,
            ),
            Focus("ring.Ring", (), "typedef struct", 8, 12, "A fixed-size ring buffer."),
        ),
    ),
    Case(
        "matrix.cpp",
        "cpp",
        {
            ("namespace", "matrix.linalg"),
            ("class", "matrix.linalg.Matrix"),
            ("constructor", "matrix.linalg.Matrix.Matrix"),
            ("method", "matrix.linalg.Matrix.at"),
            ("method", "matrix.linalg.Matrix.transpose"),
            ("struct", "matrix.linalg.Shape"),
            ("function", "matrix.main"),
        },
        ("vector", "stdexcept", "matrix.hpp"),
        (
            Focus(
                "matrix.linalg.Matrix.transpose",
                ("out.set", "at"),
                "Matrix Matrix::transpose() const",
                28,
                34,
                "Swap rows and columns.",
                complexity=2,
                parent="matrix.linalg.Matrix",
            ),
            Focus(
                "matrix.linalg.Matrix.at",
                ("std.out_of_range",),
                "double at(int r, int c) const",
                12,
                17,
                "",
                complexity=3,
                parent="matrix.linalg.Matrix",
            ),
            Focus("matrix.main", ("static_cast", "m.at"), "int main()", 43, 46, ""),
        ),
    ),
    Case(
        "library.rb",
        "ruby",
        {
            ("module", "library.Catalog"),
            ("class", "library.Catalog.Library"),
            ("constructor", "library.Catalog.Library.initialize"),
            ("method", "library.Catalog.Library.add"),
            ("method", "library.Catalog.Library.load"),
            ("method", "library.Catalog.Library.log"),
            ("function", "library.main"),
        },
        ("json", "lib/book"),
        (
            Focus(
                "library.Catalog.Library.add",
                ("@books.include?", "log", "book.title"),
                "def add(book)",
                16,
                21,
                "Adds a book unless it is already present.",
                complexity=2,
                parent="library.Catalog.Library",
            ),
            Focus(
                "library.Catalog.Library.load",
                ("JSON.parse", "File.read", "new", "data.each", "lib.add", "Book.new"),
                "def self.load(path)",
                23,
                28,
                "",
                parent="library.Catalog.Library",
            ),
            Focus(
                "library.Catalog",
                (),
                "module Catalog",
                5,
                36,
                "Shared helpers for catalog entries.",
            ),
        ),
    ),
    Case(
        "Ledger.cs",
        "csharp",
        {
            ("namespace", "Bank.Core"),
            ("struct", "Bank.Core.Entry"),
            ("interface", "Bank.Core.IAuditable"),
            ("class", "Bank.Core.Ledger"),
            ("constructor", "Bank.Core.Ledger.Ledger"),
            ("method", "Bank.Core.Ledger.Record"),
            ("method", "Bank.Core.Ledger.Audit"),
            ("enum", "Bank.Core.Currency"),
        },
        ("System", "System.Collections.Generic", "System.Math"),
        (
            Focus(
                "Bank.Core.Ledger.Record",
                (
                    "ArgumentException",
                    "entries.Add",
                    "Entry",
                    "Console.WriteLine",
                    "amount.ToString",
                ),
                "public void Record(decimal amount)",
                29,
                37,
                "<summary>Records an amount.</summary>",
                complexity=3,
                parent="Bank.Core.Ledger",
            ),
            Focus(
                "Bank.Core.Ledger.Audit",
                ("Console.WriteLine",),
                "public void Audit()",
                39,
                39,
                "",
                parent="Bank.Core.Ledger",
            ),
        ),
    ),
    Case(
        "UserRepo.php",
        "php",
        {
            ("interface", "App.Repository.Repo"),
            ("trait", "App.Repository.Loggable"),
            ("method", "App.Repository.Loggable.log"),
            ("class", "App.Repository.UserRepo"),
            ("constructor", "App.Repository.UserRepo.__construct"),
            ("method", "App.Repository.UserRepo.find"),
            ("function", "App.Repository.make_repo"),
        },
        ("App.Models.User", "Psr.Log.LoggerInterface", "helpers.php"),
        (
            Focus(
                "App.Repository.UserRepo.find",
                ("isset", "$this.log", "User.hydrate"),
                "public function find(int $id): ?User",
                36,
                43,
                "Finds a user by id.",
                complexity=3,
                parent="App.Repository.UserRepo",
            ),
            Focus(
                "App.Repository.UserRepo",
                (),
                "class UserRepo implements Repo",
                25,
                44,
                "Stores users in memory.",
            ),
        ),
    ),
    Case(
        "guide.md",
        "markdown",
        {
            ("section", "guide"),
            ("section", "guide.getting-started"),
            ("section", "guide.getting-started.install"),
            ("section", "guide.getting-started.configure"),
            ("section", "guide.reference"),
            ("section", "guide.reference.options"),
        },
        (),
        (
            Focus(
                "guide.getting-started.install",
                (),
                "## Install",
                7,
                12,
                "",
                parent="guide.getting-started",
            ),
            Focus(
                "guide.reference.options",
                (),
                "### Options ###",
                20,
                22,
                "",
                parent="guide.reference",
            ),
        ),
    ),
    Case(
        "notes.txt",
        "text",
        {("window", "notes:1-25")},
        (),
        (Focus("notes:1-25", (), "", 1, 25, ""),),
    ),
]

CASE_IDS = [case.language for case in CASES]


def _parse(case: Case) -> ParsedFile:
    text = (FIXTURES / case.fixture).read_text(encoding="utf-8")
    return parse_file(case.fixture, text)


def _by_qn(parsed: ParsedFile) -> dict[str, Chunk]:
    return {chunk.qualified_name: chunk for chunk in parsed.chunks}


def test_every_language_has_a_case():
    assert set(CASE_IDS) == set(SPECS) | {"markdown", "text"}


@pytest.mark.parametrize("language", sorted(SPECS))
def test_query_patterns_all_compile(language):
    assert get_grammar(language).rejected == ()


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_detected_language_and_imports(case):
    parsed = _parse(case)
    assert parsed.language == case.language
    assert parsed.imports == case.imports
    assert parsed.path == case.fixture


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_chunk_kinds_and_qualified_names(case):
    parsed = _parse(case)
    assert {(c.kind, c.qualified_name) for c in parsed.chunks} == case.chunks


@pytest.mark.parametrize(
    ("case", "focus"),
    [(case, focus) for case in CASES for focus in case.focus],
    ids=[f"{case.language}:{focus.qualified_name}" for case in CASES for focus in case.focus],
)
def test_focus_chunk(case, focus):
    chunk = _by_qn(_parse(case))[focus.qualified_name]
    assert chunk.calls == focus.calls
    assert chunk.signature == focus.signature
    assert (chunk.start_line, chunk.end_line) == (focus.start_line, focus.end_line)
    assert chunk.docstring == focus.docstring
    if focus.complexity is not None:
        assert chunk.complexity == focus.complexity
    assert chunk.parent_qualified_name == focus.parent
    assert chunk.name == focus.qualified_name.rsplit(".", 1)[-1] or chunk.kind in (
        "section",
        "window",
    )


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_chunk_invariants(case):
    parsed = _parse(case)
    text = (FIXTURES / case.fixture).read_text(encoding="utf-8")
    lines = text.split("\n")
    assert parsed.content_hash == sha256_hex(text)
    qns = [c.qualified_name for c in parsed.chunks]
    assert len(qns) == len(set(qns)), "qualified names are unique within a file"
    starts = [(c.start_line, -c.end_line) for c in parsed.chunks]
    assert starts == sorted(starts), "chunks come in document order"
    for chunk in parsed.chunks:
        assert chunk.kind in CHUNK_KINDS
        assert 1 <= chunk.start_line <= chunk.end_line <= len(lines)
        assert chunk.content == "\n".join(lines[chunk.start_line - 1 : chunk.end_line])
        assert chunk.content_hash == sha256_hex(chunk.content)
        assert chunk.complexity >= 1
        assert len(chunk.calls) == len(set(chunk.calls))
        if chunk.parent_qualified_name is not None:
            assert chunk.parent_qualified_name in qns


# Lines a code file may leave outside every chunk: imports, package/namespace
# headers, comments, and the punctuation of multi-line import blocks.
_UNCHUNKED_OK = re.compile(
    r"\s*(#|//|/\*|\*|import\b|from\b|package\b|use\b|using\b|require|namespace\b|<\?php"
    r"|\"[\w./]+\"$|\)$)"
)


@pytest.mark.parametrize("case", [c for c in CASES if c.language in SPECS], ids=str)
def test_no_code_line_is_dropped(case):
    parsed = _parse(case)
    lines = (FIXTURES / case.fixture).read_text(encoding="utf-8").split("\n")
    covered: set[int] = set()
    for chunk in parsed.chunks:
        covered.update(range(chunk.start_line, chunk.end_line + 1))
    dropped = [
        line
        for number, line in enumerate(lines, 1)
        if line.strip() and number not in covered and not _UNCHUNKED_OK.match(line)
    ]
    assert dropped == []


def test_python_class_chunk_excludes_method_calls():
    parsed = parse_file(
        "m.py",
        "class A:\n    x = make()\n\n    def f(self):\n        return other()\n",
    )
    chunks = _by_qn(parsed)
    assert chunks["m.A"].calls == ("make",)
    assert chunks["m.A.f"].calls == ("other",)
    assert chunks["m.A"].end_line == 5


def test_windows_overlap_on_text():
    text = (FIXTURES / "notes.txt").read_text(encoding="utf-8")
    parsed = parse_file("notes.txt", text, window_lines=10, window_overlap=3)
    spans = [(c.start_line, c.end_line) for c in parsed.chunks]
    assert spans == [(1, 10), (8, 17), (15, 24), (22, 25)]
    assert parsed.chunks[0].name == "notes.txt:1-10"
    assert all(c.kind == "window" for c in parsed.chunks)


def test_markdown_headings_in_code_fences_are_ignored():
    parsed = _parse(CASES[CASE_IDS.index("markdown")])
    names = [c.name for c in parsed.chunks]
    assert names == [
        "guide.md",
        "Getting Started",
        "Install",
        "Configure",
        "Reference",
        "Options",
    ]
    install = _by_qn(parsed)["guide.getting-started.install"]
    assert "# not a heading" in install.content
