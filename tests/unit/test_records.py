"""Where a call may land: candidate tables for call resolution (pure)."""

from __future__ import annotations

import pytest

from mnemo_indexer.records import call_candidates, packed


@pytest.mark.parametrize(
    ("callee", "module", "parent", "imports", "language", "expected"),
    [
        # CommonJS default export: `const compare = require('./compare'); compare(a, b)`
        # lands on the function compare inside module compare, when it exists, else on it.
        (
            "compare",
            "semver.functions.gt",
            None,
            ("semver.functions.compare",),
            "javascript",
            (
                "semver.functions.gt.compare",
                "semver.functions.compare.compare",
                "semver.functions.compare",
            ),
        ),
        # Python `from pkg.util import add`: the imported symbol (add.add never exists).
        (
            "add",
            "pkg.main",
            None,
            ("pkg.util.add",),
            "python",
            ("pkg.main.add", "pkg.util.add.add", "pkg.util.add"),
        ),
        # Implicit this first in other languages.
        ("f", "m", "m.K", (), "java", ("m.K.f", "m.f")),
        ("self.f", "m", "m.K", (), "python", ("m.K.f",)),
        (
            "util.add",
            "pkg.main",
            None,
            ("pkg.util",),
            "python",
            ("pkg.util.add", "util.add", "pkg.main.util.add"),
        ),
        # The root package's entry file: no module prefix.
        ("f", "", None, (), "python", ("f",)),
    ],
)
def test_call_candidates(
    callee: str,
    module: str,
    parent: str | None,
    imports: tuple[str, ...],
    language: str,
    expected: tuple[str, ...],
) -> None:
    cands, _ = call_candidates(
        callee, module=module, parent=parent, imports=imports, language=language
    )
    assert cands == expected


def test_the_api_accepts_exactly_the_languages_the_indexer_parses() -> None:
    from mnemo_core.code import LANGUAGES
    from mnemo_indexer.chunking import SUPPORTED_LANGUAGES

    assert LANGUAGES == SUPPORTED_LANGUAGES


def test_the_jobs_filter_knows_every_kind_of_job() -> None:
    import inspect
    import typing

    from mnemo_api.routes.jobs import Kind
    from mnemo_core import code, events

    made = {code.INDEX_JOB, inspect.signature(events.ingest).parameters["job_kind"].default}
    assert set(typing.get_args(Kind)) == made


def test_a_files_edges_are_unique_as_the_edges_table_requires() -> None:
    """insert_edges has no ON CONFLICT: edge_rows must never repeat (source, relationship,
    external) within a file, however often a call is repeated or an import duplicated."""
    from mnemo_indexer.chunking import parse_file
    from mnemo_indexer.records import edge_rows

    src = (
        "import os\nimport os\nfrom a import b\nfrom a import b\n\n"
        "def f():\n    b()\n    b()\n    os.path.join()\n\n"
        "class K:\n    def f(self):\n        self.f()\n        self.f()\n        b()\n\n"
        "b()\nb()\n"
    )
    edges = edge_rows(parse_file("pkg/m.py", src))
    keys = [(e.source, e.relationship, e.external) for e in edges]
    assert len(keys) == len(set(keys))
    assert ("pkg.m.f", "calls", "b") in keys and ("pkg.m", "calls", "b") in keys


@pytest.mark.parametrize(
    "columns",
    [
        [["a", "b"], ["", ""]],
        [[""], ["x"]],
        [[], []],
        [["one\x1etwo", "three"], ["p", "q"]],  # a value holding the usual separator
        [["\x1e", "\x1e\x1e", ""], ["a\x1f", "", "b"]],
    ],
)
def test_packed_columns_cut_back_into_the_same_values(columns: list[list[str]]) -> None:
    """What (string_to_array(text, separator))[2:] does to a packed column in
    insert_chunks and insert_edges, done here with str.split."""
    sep, texts = packed(columns)
    assert all(sep not in v for c in columns for v in c)
    assert [t.split(sep)[1:] for t in texts] == columns
