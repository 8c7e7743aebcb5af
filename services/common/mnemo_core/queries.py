"""Load ``sql/*.sql`` into one dict at import: call sites say ``Q["fetch_job"]``.

``queries.sql`` holds the core (jobs, events, queues, workers); other files group the
statements of one area (``code.sql``, ``ops.sql``). A name may be defined only once."""

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


def load_all() -> dict[str, str]:
    found: dict[str, str] = {}
    sql_dir = resources.files("mnemo_core").joinpath("sql")
    for entry in sorted(sql_dir.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, sql in parse(entry.read_text("utf-8")).items():
            if name in found:
                raise ValueError(f"query {name!r} is defined twice ({entry.name})")
            found[name] = sql
    return found


Q: dict[str, str] = load_all()
