"""Call and import resolution inside a repository, in Python with set lookups.

An edge keeps its candidates (best first) and a bare name. It resolves to the first
candidate that is a symbol or module of the repository, else to the one symbol the bare
name designates, else it stays external. Done in Python rather than a per-row SQL
function: a few set queries cost the same on any plan, where the per-row form degraded to
nested sequential scans on freshly written tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg

from mnemo_core.queries import Q


def pick(
    candidates: Sequence[str], bare: str | None, known: set[str], bare_map: dict[str, str]
) -> str | None:
    for c in candidates:
        if c in known:
            return c
    if bare is not None:
        return bare_map.get(bare)
    return None


async def lookups(
    conn: asyncpg.Connection, repository: str, names: Iterable[str], bares: Iterable[str]
) -> tuple[set[str], dict[str, str]]:
    """The symbols among ``names`` and the unique symbols of ``bares`` (current view)."""
    name_list = sorted(set(names))
    bare_list = sorted(set(bares))
    known = (
        {r["name"] for r in await conn.fetch(Q["known_symbols"], repository, name_list)}
        if name_list
        else set()
    )
    bare_map = (
        {
            r["name"]: r["qualified_name"]
            for r in await conn.fetch(Q["unique_bare_names"], repository, bare_list)
        }
        if bare_list
        else {}
    )
    return known, bare_map


async def resolve_repository(conn: asyncpg.Connection, repository: str) -> int:
    """Resolve every edge of a repository again; returns how many changed target."""
    known = {r["name"] for r in await conn.fetch(Q["all_symbols"], repository)}
    bare_map = {
        r["name"]: r["qualified_name"]
        for r in await conn.fetch(Q["all_unique_bare_names"], repository)
    }
    ids: list[int] = []
    targets: list[str | None] = []
    for r in await conn.fetch(Q["resolvable_edges"], repository):
        t = pick(r["candidates"], r["bare"], known, bare_map)
        if t != r["target"]:
            ids.append(r["id"])
            targets.append(t)
    if ids:
        await conn.execute(Q["set_edge_targets"], ids, targets)
    return len(ids)
