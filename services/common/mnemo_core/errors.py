"""The project's own errors. Driver errors are translated into these at one boundary (db.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def validation_message(error: Mapping[str, Any]) -> str:
    """One pydantic error's message in the validator's own words (pydantic words a
    validator's ValueError "Value error, <what it said>")."""
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


class MnemoError(Exception):
    """Base of every MnemoLite error."""


class DatabaseUnavailable(MnemoError):
    """PostgreSQL cannot be reached (down, restarting, pool exhausted)."""


class MigrationError(MnemoError):
    """The schema cannot be brought to the expected state."""


class NotFound(MnemoError):
    """``what`` ``ident`` does not exist; ``suggestions``: names that do, which the caller
    may have meant (said in the message too)."""

    def __init__(self, what: str, ident: object, *, suggestions: Sequence[str] = ()) -> None:
        hint = ""
        if suggestions:
            *head, last = suggestions
            hint = f"; did you mean {', '.join(head)}{' or ' if head else ''}{last}?"
        super().__init__(f"{what} {ident} not found{hint}")
        self.what = what
        self.ident = ident
        self.suggestions = list(suggestions)


class Conflict(MnemoError):
    """The request contradicts the current state (e.g. cancelling a finished job)."""


class EmbedderUnavailable(MnemoError):
    """No live embedder answered a query embedding in time."""


class InvalidInput(MnemoError):
    """A request that cannot be accepted; ``field`` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class PoisonMessage(MnemoError):
    """A queue message that can never be processed: dead-letter it at once."""
