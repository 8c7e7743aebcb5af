"""Keyset page cursors: the sort key of the last row of a page (a time and an id), opaque
to clients. ``/v1/jobs`` and ``/v1/events`` page with them."""

from __future__ import annotations

import base64
import datetime as dt
import uuid

from fastapi import HTTPException


def encode(at: dt.datetime, ident: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{ident}".encode()).decode()


def decode(text: str) -> tuple[dt.datetime, uuid.UUID]:
    """The time and id in a cursor; a 422 naming ``query.cursor`` for anything else."""
    try:
        at_text, ident = base64.urlsafe_b64decode(text.encode()).decode().split("|")
        at = dt.datetime.fromisoformat(at_text)
        if at.tzinfo is None:
            raise ValueError("no time zone")
        at.astimezone(dt.UTC)  # the database's range: OverflowError beyond it
        return at, uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise HTTPException(422, "query.cursor: not a cursor returned by this API") from exc
