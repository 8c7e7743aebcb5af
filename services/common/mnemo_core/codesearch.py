"""Code search: a lexical leg (full text over split identifiers + trigram on names) and a
vector leg (cosine HNSW), fused with reciprocal-rank fusion. Filters apply inside both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from mnemo_core.queries import Q
from mnemo_core.text import lexical_terms, tsquery

RRF_K = 60
MODES = ("hybrid", "lexical", "vector")


@dataclass(frozen=True)
class Filters:
    repository: str | None = None
    language: str | None = None
    kind: str | None = None
    path_prefix: str | None = None

    def args(self) -> tuple[str | None, str | None, str | None, str | None]:
        prefix = None
        if self.path_prefix:
            # A prefix is data: escape LIKE's wildcards.
            prefix = self.path_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return self.repository, self.language, self.kind, prefix


def rrf(legs: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: score(d) = sum over legs of 1 / (k + rank of d in the leg),
    ranks from 1. Ties keep the order of first appearance."""
    scores: dict[int, float] = {}
    for leg in legs:
        for rank, item in enumerate(leg, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    order = {item: i for i, item in enumerate(dict.fromkeys(i for leg in legs for i in leg))}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


async def lexical(
    conn: asyncpg.Connection, query: str, filters: Filters, limit: int
) -> list[tuple[int, float]]:
    terms = lexical_terms(query)
    if not terms:
        return []
    rows = await conn.fetch(
        Q["search_code_lexical"], tsquery(terms), query.strip()[:200], *filters.args(), limit
    )
    return [(r["id"], float(r["score"])) for r in rows]


async def vector(
    conn: asyncpg.Connection,
    vec: np.ndarray,
    model: str,
    filters: Filters,
    limit: int,
    ef_search: int,
) -> list[tuple[int, float]]:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL hnsw.ef_search = {max(int(ef_search), limit)}")
        await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        rows = await conn.fetch(Q["search_code_vector"], vec, model, *filters.args(), limit)
    return [(r["id"], float(r["score"])) for r in rows]


def _snippet(content: str, lines: int = 12) -> str:
    out = content.splitlines()[:lines]
    return "\n".join(out)


async def results(
    conn: asyncpg.Connection,
    fused: list[tuple[int, float]],
    lex: dict[int, float],
    vec: dict[int, float],
    limit: int,
) -> list[dict[str, Any]]:
    top = fused[:limit]
    rows = {r["id"]: r for r in await conn.fetch(Q["chunks_by_id"], [i for i, _ in top])}
    out = []
    for ident, score in top:
        r = rows.get(ident)
        if r is None:  # deleted between the legs and now
            continue
        out.append(
            {
                "id": ident,
                "repository": r["repository"],
                "path": r["path"],
                "language": r["language"],
                "start_line": r["start_line"],
                "end_line": r["end_line"],
                "kind": r["kind"],
                "name": r["name"],
                "qualified_name": r["qualified_name"],
                "signature": r["signature"],
                "docstring": r["docstring"],
                "snippet": _snippet(r["content"]),
                "scores": {"lexical": lex.get(ident), "vector": vec.get(ident), "fused": score},
            }
        )
    return out
