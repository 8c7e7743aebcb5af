"""Load ``sql/queries.sql`` into a dict at import: call sites say ``Q["fetch_job"]``."""

from __future__ import annotations

import re
from importlib import resources

_HEADER = re.compile(r"^-- ([a-z_][a-z0-9_]*) --$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Split a queries file into {name: statement}; the purpose comment stays in the SQL."""
    parts = _HEADER.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"query {name!r} is defined twice")
        sql = "\n".join(
            line for line in body.strip().splitlines() if not line.startswith("-- ====")
        ).strip()
        found[name] = sql.rstrip(";")
    return found


Q: dict[str, str] = parse(
    resources.files("mnemo_core").joinpath("sql", "queries.sql").read_text("utf-8")
)
