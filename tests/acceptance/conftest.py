"""Acceptance fixtures: a database of its own per test module, real processes, real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mnemo_core.localpg import LocalPostgres
from tests.helpers import cloned_database

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def module_dsn(pg: LocalPostgres) -> Iterator[str]:
    with cloned_database(pg, "acc") as dsn:
        yield dsn
