"""Text from the API (memories, paths, errors) as the terminal may print it.

Stored text is anyone's: ``[/INST]`` or ``[bold]`` in a memory is Rich markup to a console
(a crash, or brackets silently lost), and an escape sequence in it would drive the terminal
(retitle the window, clear the screen). Every value from the API goes through one of these
before it is printed."""

from __future__ import annotations

import re

from rich.markup import escape

# C0 and C1 control characters but tab and newline, and DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(value: object) -> str:
    """``value`` as text with its control characters written out (``\\x1b``)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def shown(value: object) -> str:
    """:func:`plain`, and safe inside Rich markup: its brackets print as brackets."""
    return escape(plain(value))
