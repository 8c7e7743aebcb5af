"""The operator page: ``GET /ui`` is a server-rendered shell (no data in it, so it loads
without a key); its inline script polls ``GET /ui/data`` every two seconds with the key the
operator entered once (kept in the browser's sessionStorage, sent as X-API-Key)."""

from __future__ import annotations

import datetime as dt
import functools
import secrets
import time
from typing import Any

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from mnemo_api.errors import problem
from mnemo_api.metrics import HISTORY_S, ops_of
from mnemo_api.state import AppState, state
from mnemo_core import __version__, jobs
from mnemo_core.queries import Q

router = APIRouter(include_in_schema=False)

POLL_MS = 2000
RECENT_JOBS = 15


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mnemo_api", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
    )


def page_headers(nonce: str) -> dict[str, str]:
    """The page runs only its own inline script and style (this response's nonce), talks
    only to its own origin, and is never shown inside another site's frame (where its
    replay button could be clicked for the operator)."""
    csp = "; ".join(
        [
            "default-src 'none'",
            f"script-src 'nonce-{nonce}'",
            f"style-src 'nonce-{nonce}'",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


@router.get("/ui", response_class=HTMLResponse)
async def page(st: AppState = Depends(state)) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    html = (
        _templates()
        .get_template("ui.html")
        .render(
            version=__version__,
            poll_ms=POLL_MS,
            history_s=HISTORY_S,
            keys_required=bool(st.settings.api_key_list),
            nonce=nonce,
        )
    )
    return HTMLResponse(html, headers=page_headers(nonce))


def _job(row: Any) -> dict[str, Any]:
    out = jobs.to_json(row)
    out.pop("params", None)
    out.pop("result", None)
    out["some_failures"] = row["some_failures"]
    return out


@router.get("/ui/data")
async def data(request: Request, st: AppState = Depends(state)) -> JSONResponse:
    """Everything the page draws, in one answer."""
    monitor = ops_of(request).monitor
    snap = await monitor.current() if monitor is not None else None
    if monitor is None or snap is None or not monitor.db_up:
        return problem(503, "the database is unavailable; retry shortly")
    async with st.acquire() as conn:
        recent = [_job(r) for r in await conn.fetch(Q["recent_jobs"], RECENT_JOBS)]
    now = time.time()
    workers = [
        {
            **w,
            "heartbeat_age_s": round(now - _ts(w["last_heartbeat"]), 1),
            "throughput": monitor.throughput(w["id"], w["processed"], now),
        }
        for w in snap.workers
    ]
    return JSONResponse(
        {
            "generated_at": snap.at,
            "dead_after_s": st.settings.worker_dead_after_s,
            "queues": snap.queues,
            "history": monitor.history_json(),
            "workers": workers,
            "jobs": recent,
        },
        headers={"Cache-Control": "no-store"},
    )


def _ts(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()
