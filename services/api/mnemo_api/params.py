"""Query parameters a route does not take are refused, as unknown body fields are.

FastAPI ignores query parameters it was not told about, so a misspelt filter
(``?filter=`` for ``?filter_metadata=``) would silently widen a search."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError

_KNOWN = "_mnemo_query_names"  # on each route, once worked out: the parameters it takes


def _names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _names(sub)
    return names


async def known_query(request: Request) -> None:
    """A router dependency: 422 naming each query parameter the route does not take."""
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known: frozenset[str] | None = getattr(route, _KNOWN, None)
    if known is None:
        known = frozenset(_names(dependant))
        setattr(route, _KNOWN, known)
    unknown = [k for k in dict.fromkeys(request.query_params.keys()) if k not in known]
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise RequestValidationError(
            [
                {
                    "loc": ("query", k),
                    "msg": f"unknown query parameter (this route takes: {takes})",
                    "type": "extra_forbidden",
                    "input": request.query_params.get(k),
                }
                for k in unknown
            ]
        )
