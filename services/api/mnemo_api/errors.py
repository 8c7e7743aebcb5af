"""One boundary where errors become HTTP answers: a clear message, never a stack trace."""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from mnemo_api.archive import TooLarge
from mnemo_core import db
from mnemo_core import logging as mlog
from mnemo_core.errors import (
    Conflict,
    DatabaseUnavailable,
    EmbedderUnavailable,
    InvalidInput,
    NotFound,
    validation_message,
)

log = mlog.get(__name__)
RETRY_AFTER_S = "5"
#: What a JSON body nested beyond what the parser reads (about 1000 levels) is told.
TOO_DEEP = "body: JSON nested too deeply to read"


def too_deep(exc: RecursionError) -> StarletteHTTPException:
    """A 400 for a JSON body the parser gave up on, like any other unreadable body."""
    err = StarletteHTTPException(400, TOO_DEEP)
    err.__cause__ = exc
    return err


def is_json_media_type(content_type: str) -> bool:
    """Whether FastAPI reads a body of this Content-Type as JSON: ``application/json`` or
    ``application/*+json``, in any case, with any parameters."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def not_json(content_type: str, *, accepted: str = "application/json") -> StarletteHTTPException:
    """The 415 for a body sent as something else than JSON (``curl -d`` without a header
    sends ``application/x-www-form-urlencoded``), or with no Content-Type: the framework
    hands the route the raw bytes then, and would answer that the body "should be a valid
    dictionary", which misleads. (FastAPI reads no body without a JSON Content-Type as
    JSON: a browser can send such a body to another site without asking it first.)"""
    sent = f"its Content-Type is {content_type!r}" if content_type else "it has no Content-Type"
    return StarletteHTTPException(415, f"body: send it as {accepted} ({sent})")


def problem(status: int, detail: str, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_S} if status == 503 else None
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _described(e: dict[str, Any]) -> dict[str, str]:
    """One validation error as ``{field, message}``. A body that is not JSON is reported by
    the framework at ``("body", <character offset>)``: the field is the body, and the
    offset and the parser's reason belong in the message."""
    loc = tuple(e.get("loc", ()))
    if e.get("type") == "json_invalid":
        where = f" at character {loc[1]}" if len(loc) > 1 and isinstance(loc[1], int) else ""
        reason = (e.get("ctx") or {}).get("error")
        because = f": {reason}" if reason else ""
        return {"field": "body", "message": f"invalid JSON{where}{because}"}
    return {"field": _field(loc), "message": validation_message(e)}


#: The methods a 405's ``Allow`` can name.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(req: Request) -> tuple[list[str], bool]:
    """The methods the API answers at this request's path, and whether the path is one the
    OpenAPI schema names as it is (a fixed resource, such as ``/v1/events/batch``).

    Starlette's 405 names the methods of the first route whose path matched, not of all of
    them: ``OPTIONS /v1/events`` was told ``Allow: POST``, though GET is served there too.
    Each route is asked, through the router's public ``matches``, whether it would serve
    the path with each method. A fixed path's own methods are those its schema documents
    (and HEAD where GET is, as the undocumented HEAD routes answer): the parameter routes
    beside it do not count, since ``/v1/events/batch`` is not an event whose id is
    "batch"."""
    served: set[str] = set()
    for method in METHODS:
        probe = {**req.scope, "method": method, "path_params": {}}
        if any(route.matches(probe)[0] is Match.FULL for route in req.app.router.routes):
            served.add(method)
    path = req.scope["path"]
    root = req.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    documented = req.app.openapi()["paths"].get(path)
    if documented is None:
        return [m for m in METHODS if m in served], False
    fixed = {m.upper() for m in documented} & set(METHODS)
    if "GET" in fixed and "HEAD" in served:
        fixed.add("HEAD")
    return [m for m in METHODS if m in fixed], True


def not_allowed(req: Request) -> JSONResponse:
    methods, _ = allowed_methods(req)
    resp = problem(
        405, f"method {req.method} is not allowed on {req.url.path} (allowed: {', '.join(methods)})"
    )
    resp.headers["Allow"] = ", ".join(methods)
    return resp


def no_route(req: Request) -> JSONResponse:
    """The 404 of a path no route serves, naming the path; when the same path with its
    trailing slash dropped (or added) is served, that one too."""
    path = req.scope["path"]
    other = path.rstrip("/") if path.endswith("/") else path + "/"
    hint = ""
    if other and allowed_methods(Request({**req.scope, "path": other}))[0]:
        hint = f"; did you mean {other}?"
    return problem(404, f"no route at {path}{hint}")


async def _invalid(req: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    found = exc.errors()
    if any(tuple(e.get("loc", ()))[:1] == ("path",) for e in found):
        methods, fixed = allowed_methods(req)
        if fixed and req.method not in methods:
            # GET /v1/events/batch reached GET /v1/events/{event_id} with "batch" as an id.
            return not_allowed(req)
    ctype = req.headers.get("content-type", "")
    body_refused = any(tuple(e.get("loc", ()))[:1] == ("body",) for e in found)
    if body_refused and not is_json_media_type(ctype):
        return await _http(req, not_json(ctype))
    errors = [_described(e) for e in found]
    first = errors[0] if errors else {"field": "", "message": "invalid request"}
    return problem(422, f"{first['field']}: {first['message']}", errors=errors)


async def _model_invalid(_req: Request, exc: Exception) -> JSONResponse:
    """A model built inside a route (e.g. from query parameters) refused its input."""
    assert isinstance(exc, ValidationError)
    errors = [
        {
            "field": ".".join(["query", *map(str, e.get("loc", ()))]),
            "message": validation_message(e),
        }
        for e in exc.errors()
    ]
    first = errors[0]
    return problem(422, f"{first['field']}: {first['message']}", errors=errors)


async def _http(req: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        # The framework's generic "error parsing the body": say what was wrong with it.
        return problem(422, f"body: is not valid UTF-8 (invalid byte at offset {cause.start})")
    if exc.status_code == 400 and isinstance(cause, RecursionError):
        return problem(400, TOO_DEEP)
    if exc.status_code == 400 and isinstance(cause, ValueError) and "digits" in str(cause):
        # Python's bound on converting a decimal integer, hit by json.loads.
        return problem(422, "body: a number has more than 4300 digits")
    if exc.status_code == 405:
        return not_allowed(req)
    if exc.status_code == 404 and "endpoint" not in req.scope:
        return no_route(req)  # the router's own 404: no route matched
    resp = problem(exc.status_code, str(exc.detail))
    for k, v in (exc.headers or {}).items():
        resp.headers[k] = v
    return resp


async def _bad_input(_req: Request, exc: Exception) -> JSONResponse:
    return problem(413 if isinstance(exc, TooLarge) else 422, str(exc))


async def _not_found(_req: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotFound)
    extra = {"did_you_mean": exc.suggestions} if exc.suggestions else {}
    return problem(404, str(exc), **extra)


async def _conflict(_req: Request, exc: Exception) -> JSONResponse:
    return problem(409, str(exc))


async def _no_embedder(_req: Request, exc: Exception) -> JSONResponse:
    return problem(503, str(exc))


async def _unavailable(req: Request, exc: Exception) -> JSONResponse:
    # Every request fails the same way during an outage: logged first, then summed up
    # (db.OutageLog); the ops monitor logs its end.
    outage: db.OutageLog = req.app.state.db_outage
    outage.failed(error=str(exc) or type(exc).__name__, path=req.url.path)
    return problem(503, "the database is unavailable; retry shortly")


async def _contended(req: Request, exc: Exception) -> JSONResponse:
    # db.in_transaction already ran the transaction again: the rows are that busy.
    log.warning("transaction_conflict_persisted", error=str(exc), path=req.url.path)
    return problem(503, "conflicting concurrent writes to the same rows; retry shortly")


async def _bad_value(_req: Request, exc: Exception) -> JSONResponse:
    return problem(422, f"invalid value: {exc}")


async def _unexpected(req: Request, exc: Exception) -> JSONResponse:
    # This one runs in Starlette's outermost layer, outside the middleware that binds the
    # request id to log lines and adds it to answers: both are done here.
    rid = getattr(req.state, "request_id", None)
    log.exception("unhandled_error", path=req.url.path, request_id=rid)
    resp = problem(500, f"internal error (request {rid})" if rid else "internal error")
    if rid:
        resp.headers["X-Request-ID"] = rid
    return resp


def install(app: FastAPI) -> None:
    app.state.db_outage = db.OutageLog(counted="refused")
    handlers: dict[type[Exception], Any] = {
        RequestValidationError: _invalid,
        ValidationError: _model_invalid,
        StarletteHTTPException: _http,
        InvalidInput: _bad_input,
        NotFound: _not_found,
        Conflict: _conflict,
        EmbedderUnavailable: _no_embedder,
        DatabaseUnavailable: _unavailable,
        asyncpg.DataError: _bad_value,
        Exception: _unexpected,
    }
    # Handlers for specific classes answer in ExceptionMiddleware, without the traceback
    # that the catch-all leaves in the server log.
    for cls in db.UNAVAILABLE_ERRORS:
        handlers[cls] = _unavailable  # type: ignore[index]
    for cls in db.CONFLICT_ERRORS:
        handlers[cls] = _contended  # type: ignore[index]
    for cls, handler in handlers.items():
        app.add_exception_handler(cls, handler)
