"""The symbol graph: a symbol with its callers and callees, walks, shortest call paths.

Walks run breadth-first in Python, one query per level with a global visited set, so their
cost grows with the edges touched, never with the number of paths."""

from __future__ import annotations

from typing import Any

import asyncpg

from mnemo_core.code import unknown_repository
from mnemo_core.errors import NotFound
from mnemo_core.queries import Q

RELATIONSHIPS = ("contains", "calls", "imports")
MAX_DEPTH = 6
MAX_NODES = 2000
#: At most this many names are suggested for an unknown symbol.
SUGGESTIONS = 5


async def symbol(
    conn: asyncpg.Connection, repository: str, qualified_name: str, *, limit: int = 200
) -> dict[str, Any]:
    rows = await conn.fetch(Q["symbol"], repository, qualified_name)
    if not rows:
        if not await conn.fetchval(Q["repository_exists"], repository):
            raise await unknown_repository(conn, repository)
        raise await _unknown_symbol(conn, repository, qualified_name)
    first = rows[0]
    callers = await conn.fetch(Q["callers"], repository, qualified_name, limit)
    callees = await conn.fetch(Q["callees"], repository, qualified_name, limit)
    return {
        "repository": repository,
        "qualified_name": qualified_name,
        "name": first["name"],
        "kind": first["kind"],
        "language": first["language"],
        "path": first["path"],
        "start_line": first["start_line"],
        "end_line": first["end_line"],
        "signature": first["signature"],
        "docstring": first["docstring"],
        "parent": first["parent_qualified_name"],
        "complexity": first["complexity"],
        "definitions": [
            {"path": r["path"], "start_line": r["start_line"], "end_line": r["end_line"]}
            for r in rows
        ],
        "callers": [
            {
                "qualified_name": r["qualified_name"],
                "path": r["path"],
                "line": r["line"],
                "call_line": r["call_line"],
            }
            for r in callers
        ],
        "callees": [
            {
                "qualified_name": r["qualified_name"],
                "resolved": r["resolved"],
                "path": r["path"],
                "line": r["line"],
                "call_line": r["call_line"],
            }
            for r in callees
        ],
    }


async def _check_known(conn: asyncpg.Connection, repository: str, *names: str) -> None:
    """NotFound for an unknown repository, or for the first of ``names`` that is no node of
    its graph (a walk from it would find nothing: a typo, said as such)."""
    if not await conn.fetchval(Q["repository_exists"], repository):
        raise await unknown_repository(conn, repository)
    missing = await conn.fetch(Q["symbols_missing"], repository, list(names))
    if missing:
        raise await _unknown_symbol(conn, repository, missing[0]["name"])


async def _unknown_symbol(conn: asyncpg.Connection, repository: str, name: str) -> NotFound:
    """The 404 of a name no symbol of the repository goes by, with the qualified names of
    those its last part names (a short name, ``in_transaction``, or a tail of one, finds
    ``app.db.in_transaction``): an agent often knows only that much."""
    short = name.rsplit(".", 1)[-1]
    rows = await conn.fetch(Q["symbol_suggestions"], repository, name, short, SUGGESTIONS)
    return NotFound("symbol", name, suggestions=[r["q"] for r in rows])


async def traverse(
    conn: asyncpg.Connection,
    repository: str,
    start: str,
    *,
    direction: str,
    relationship: str | None,
    max_depth: int,
) -> dict[str, Any]:
    """Every node reachable from ``start`` within ``max_depth`` hops, with its depth and the
    edges walked (``from`` -> ``to`` always in the edge's own direction)."""
    await _check_known(conn, repository, start)
    depth_of: dict[str, int] = {start: 0}
    edges: list[dict[str, Any]] = []
    frontier = [start]
    truncated = False
    for depth in range(1, max_depth + 1):
        found: list[str] = []
        if direction in ("out", "both"):
            for r in await conn.fetch(Q["edges_out"], repository, frontier, relationship, False):
                edges.append(
                    {
                        "from": r["source"],
                        "to": r["other"],
                        "relationship": r["relationship"],
                        "resolved": r["resolved"],
                    }
                )
                found.append(r["other"])
        if direction in ("in", "both"):
            for r in await conn.fetch(Q["edges_in"], repository, frontier, relationship):
                edges.append(
                    {
                        "from": r["other"],
                        "to": r["node"],
                        "relationship": r["relationship"],
                        "resolved": True,
                    }
                )
                found.append(r["other"])
        frontier = []
        for node in dict.fromkeys(found):
            if node not in depth_of:
                depth_of[node] = depth
                frontier.append(node)
        if len(depth_of) > MAX_NODES:
            truncated = True
            break
        if not frontier:
            break
    nodes = [{"qualified_name": n, "depth": d} for n, d in depth_of.items() if n != start]
    unique_edges = list({(e["from"], e["to"], e["relationship"]): e for e in edges}.values())
    return {
        "repository": repository,
        "start": start,
        "direction": direction,
        "nodes": nodes,
        "edges": unique_edges,
        "truncated": truncated,
    }


async def call_path(
    conn: asyncpg.Connection, repository: str, source: str, target: str, *, max_depth: int
) -> list[dict[str, Any]] | None:
    """The shortest chain of resolved calls from ``source`` to ``target``, or None (no chain
    of at most ``max_depth`` steps). A class in the chain goes on to its constructor: a call
    to the class runs it."""
    await _check_known(conn, repository, source, target)
    parent: dict[str, str | None] = {source: None}
    frontier = [source]
    for _ in range(max_depth):
        nxt: list[str] = []
        for r in await conn.fetch(Q["call_steps"], repository, frontier):
            node = r["other"]
            if node not in parent:
                parent[node] = r["source"]
                nxt.append(node)
        if target in parent:
            chain: list[str] = []
            cur: str | None = target
            while cur is not None:
                chain.append(cur)
                cur = parent[cur]
            chain.reverse()
            where = {
                r["qualified_name"]: r
                for r in await conn.fetch(Q["locate_symbols"], repository, chain)
            }
            return [
                {
                    "qualified_name": q,
                    "path": where[q]["path"] if q in where else None,
                    "line": where[q]["start_line"] if q in where else None,
                }
                for q in chain
            ]
        if not nxt or len(parent) > MAX_NODES:
            return None
        frontier = nxt
    return None
