"""Which text of an event gets embedded (MnemoLite's rule)."""

from __future__ import annotations

from typing import Any

TEXT_FIELDS = ("text", "body", "message", "content", "title")


def event_text(content: Any) -> str | None:
    """The first non-empty string among content.text|body|message|content|title, else None."""
    if not isinstance(content, dict):
        return None
    for key in TEXT_FIELDS:
        value = content.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None
