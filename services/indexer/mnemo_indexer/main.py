"""``mnemo-indexer``: the code indexing worker (consumes the ``index`` queue).

Not built yet: it lands with the code-intelligence issue. The command exists so the
packaging, the container stack and the local runner already know its name."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    print("mnemo-indexer: the code indexer is not built yet", file=sys.stderr)
    sys.exit(2)
