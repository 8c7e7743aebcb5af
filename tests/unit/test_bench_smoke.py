"""The benchmark harness's pure parts (targets, corpus), and the batching rule the embedder
got from the benchmarks. The end-to-end smoke run is tests/integration/test_bench_quick_run.py."""

from __future__ import annotations

import numpy as np
import pytest

from bench.mnemobench import corpus, report
from mnemo_embedder.worker import FULL_WINDOW_CHARS, _read_qty, _slices


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ({"embed_pipeline": {"ratio": 0.95}}, True),
        ({"embed_pipeline": {"ratio": 0.5}}, False),
        ({"search": {"p95_ms": 12.0}}, True),
        ({"search": {"p95_ms": 15.1}}, False),
        ({}, None),
    ],
)
def test_verdicts(results: dict, expected: bool | None) -> None:
    (section,) = results or {"embed_pipeline": {}}
    key = next(iter(results[section])) if results else "ratio"
    v = next(v for v in report.verdicts(results) if (v["section"], v["key"]) == (section, key))
    assert v["pass"] is expected


def test_rounds_alternate_which_side_goes_first() -> None:
    from bench.mnemobench.context import first_then_second

    order = [side for k in range(4) for side in first_then_second(k, ("raw", "e2e"))]
    assert order == ["raw", "e2e", "e2e", "raw", "raw", "e2e", "e2e", "raw"]


def test_corpus_is_seeded_and_mixed() -> None:
    assert corpus.notes(50) == corpus.notes(50)
    assert len(set(corpus.notes(200))) == 200
    files = corpus.stdlib_files(["json"])
    assert "json/decoder.py" in files and not any("test" in f.split("/")[0] for f in files)


def test_synthesized_vectors_are_unit_and_near_their_sources() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((20, 384)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    out = corpus.synthesize(base, 500)
    assert out.shape == (500, 384) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert (out @ base.T).max(axis=1).min() > 0.5  # each stays close to a real vector


@pytest.mark.parametrize(
    ("lengths", "size", "expected"),
    [
        ([], 64, []),
        ([5], 64, [[0]]),
        # longest first; a call stops at the batch size...
        ([10, 11, 12], 2, [[2, 1], [0]]),
        # ... and where texts get 1.5x shorter than the call's first
        ([100, 3000, 60, 2000, 70], 64, [[1, 3], [0, 4], [2]]),
        # past the model's window every text costs the same: one call
        ([FULL_WINDOW_CHARS * 3, FULL_WINDOW_CHARS], 64, [[0, 1]]),
    ],
)
def test_embedder_slices_by_length(lengths: list[int], size: int, expected: list) -> None:
    slices = _slices(lengths, size)
    assert slices == expected
    assert sorted(i for s in slices for i in s) == list(range(len(lengths)))


@pytest.mark.parametrize(
    ("ids_per_message", "message_batch", "expected"),
    [
        (64.0, 64, 4),  # full batch messages: one group's worth, not 4,096 items
        (50.0, 64, 5),
        (1.0, 64, 64),  # single-event messages: capped by message_batch
        (0.0, 64, 64),
        (10_000.0, 64, 1),
    ],
)
def test_embedder_reads_about_one_group(
    ids_per_message: float, message_batch: int, expected: int
) -> None:
    assert _read_qty(ids_per_message, message_batch) == expected
