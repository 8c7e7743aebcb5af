"""Retry policy: a pure function of (error, delivery count). Table-tested without a database."""

from __future__ import annotations

from dataclasses import dataclass

from mnemo_core.errors import PoisonMessage


@dataclass(frozen=True)
class Retry:
    """Make the message visible again after ``delay_s`` seconds."""

    delay_s: int


@dataclass(frozen=True)
class DeadLetter:
    """Move the message to the stage's dead-letter queue with ``reason``."""

    reason: str


Decision = Retry | DeadLetter


def backoff_s(read_ct: int, base: float = 2.0, cap: float = 300.0) -> int:
    """Exponential backoff by delivery count: 2, 4, 8, ... seconds, capped."""
    return int(min(cap, base ** max(1, read_ct)))


def decide(error: BaseException, read_ct: int, max_attempts: int) -> Decision:
    """What to do with a message whose processing raised ``error`` on delivery ``read_ct``."""
    if isinstance(error, PoisonMessage):
        return DeadLetter(f"poison message: {error}")
    if read_ct >= max_attempts:
        # The first line: PostgreSQL's errors go on with DETAIL and HINT lines.
        said = str(error).strip().splitlines()
        what = f"{type(error).__name__}: {said[0]}" if said else type(error).__name__
        return DeadLetter(f"gave up after {read_ct} attempts: {what}")
    return Retry(backoff_s(read_ct))


def exhausted(read_ct: int, max_attempts: int) -> bool:
    """A message delivered more than ``max_attempts`` times is dead-lettered before any work
    (its earlier deliveries crashed or timed out without a verdict)."""
    return read_ct > max_attempts
