"""ASGI middleware: request ids, request body limit (413), API-key auth (401), the refusal
of cross-site writes from browsers (403) and of host names nobody configured (400).

Written by hand because each is a few lines over the ASGI interface and the usual
packages for them bring more than they give here."""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _reply(
    send: Send, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _TooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit. An HTTPException, so
    the framework's body parsing re-raises it (as a 413) instead of calling it a parse
    error."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


def _header(scope: Scope, wanted: bytes) -> bytes:
    for name, value in scope.get("headers", []):
        if name == wanted:
            return bytes(value)
    return b""


def _declared_length(scope: Scope) -> int:
    try:
        return int(_header(scope, b"content-length") or 0)
    except ValueError:
        return 0


class BodyLimit:
    """Refuse bodies over ``max_bytes``: by Content-Length up front, or while streaming.

    ``multipart`` gives some paths a larger limit for ``multipart/form-data`` bodies only
    (archive uploads, bounded by ``MNEMO_MAX_ARCHIVE_BYTES``); a JSON body on the same path
    keeps ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int, multipart: dict[str, int] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.multipart = multipart or {}

    def _limit(self, scope: Scope) -> tuple[int, str]:
        upload = self.multipart.get(scope["path"])
        if upload is not None:
            ctype = _header(scope, b"content-type").lower()
            if ctype.startswith(b"multipart/form-data"):
                return upload, "MNEMO_MAX_ARCHIVE_BYTES"
        return self.max_bytes, "MNEMO_MAX_BODY_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit(scope)
        detail = f"request body exceeds the limit of {limit} bytes ({setting})"
        if _declared_length(scope) > limit:
            await _reply(send, 413, detail)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge(detail)
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reply(send, 413, detail)


class ApiKeys:
    """With keys configured, every path under the protected prefixes needs ``X-API-Key``."""

    def __init__(self, app: ASGIApp, keys: list[str], protected: tuple[str, ...]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.protected = protected

    def _valid(self, presented: bytes) -> bool:
        # Compare against every key, in constant time each, without stopping early.
        ok = False
        for key in self.keys:
            ok |= hmac.compare_digest(presented, key)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys and scope["path"].startswith(self.protected):
            presented = b""
            for name, value in scope.get("headers", []):
                if name == b"x-api-key":
                    presented = value
            if not self._valid(presented):
                await _reply(
                    send, 401, "missing or invalid X-API-Key", ((b"www-authenticate", b"ApiKey"),)
                )
                return
        await self.app(scope, receive, send)


#: Methods a page of another site must not use here (the rest only read).
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: ``Sec-Fetch-Site`` values of a request the user or our own page made.
_OWN_SITE = frozenset({b"same-origin", b"none"})


class CrossSiteGuard:
    """Refuse a write a browser sends on behalf of a page of another site (403).

    A form or ``fetch`` on any web page can POST to ``127.0.0.1:8000`` without asking (a
    multipart upload of an archive with ``prune`` among them), and without API keys nothing
    else stops it. Browsers say where a request comes from in ``Sec-Fetch-Site``, which a
    page cannot set; clients that are not browsers (curl, the CLI, SDKs) send none and are
    not affected, nor is the operator page (``same-origin``). A browser too old to send it
    (before 2023 for Safari) still sends ``Origin`` with a cross-origin write: without
    ``Sec-Fetch-Site``, an ``Origin`` that is not this server's own (its host and port
    are not the ``Host`` header's; ``null``, a sandboxed or local page) is refused too.
    The API serves no CORS headers, so no page of another site could read an answer
    anyway."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _SAFE_METHODS:
            site = _header(scope, b"sec-fetch-site").lower()
            origin = b"" if site else _header(scope, b"origin")
            if site and site not in _OWN_SITE:
                said = f"Sec-Fetch-Site: {site[:64].decode('latin-1')}"
            elif origin and not _same_origin(origin, _header(scope, b"host")):
                said = f"Origin: {origin[:200].decode('latin-1')}"
            else:
                await self.app(scope, receive, send)
                return
            await _reply(send, 403, f"refused: a page of another site cannot write here ({said})")
            return
        await self.app(scope, receive, send)


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _same_origin(origin: bytes, host: bytes) -> bool:
    """Whether an ``Origin`` header (``scheme://host[:port]``) names the server the
    ``Host`` header does: the same host and port, a scheme's default port written or
    not. ``null`` names none."""
    scheme, sep, authority = origin.decode("latin-1").strip().lower().partition("://")
    if not sep or scheme not in _DEFAULT_PORTS or not authority or "/" in authority:
        return False
    port = _DEFAULT_PORTS[scheme]
    mine = host.decode("latin-1").strip().lower()
    return _with_port(authority, port) == _with_port(mine, port)


def _with_port(authority: str, default: str) -> str:
    """``host`` -> ``host:<default>``; ``host:port`` and ``[::1]:port`` stay as they are."""
    if authority.endswith("]") or ":" not in authority.rpartition("]")[2]:
        return f"{authority}:{default}"
    return authority


@functools.lru_cache(maxsize=256)
def _local_host(header: bytes) -> tuple[str, bool]:
    """A Host header's name, and whether it is local or an address (cached: a server sees
    few distinct Host headers, and parsing an address is most of the check's cost)."""
    name = host_name(header.decode("latin-1"))
    return name, is_local_or_address(name)


def host_name(host_header: str) -> str:
    """The name in a Host header, without its port, in lower case: ``Foo.test:8000`` ->
    ``foo.test``; ``[::1]:8000`` -> ``::1``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, _, port = host.rpartition(":")
    return (name if name and port.isdigit() else host).rstrip(".")


def is_local_or_address(name: str) -> bool:
    """An IP address (no one can point a name at it), ``localhost`` or ``*.localhost``."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostGuard:
    """Without API keys, answer only to IP addresses, localhost and the configured names.

    DNS rebinding: a page on ``attacker.example`` points that name at 127.0.0.1 once it is
    loaded; the browser then takes the API for the page's own origin, and the page can read
    every memory and write anything (no Sec-Fetch-Site, no CORS stands in the way). Its
    requests still carry ``Host: attacker.example``. Starlette's TrustedHostMiddleware
    does the same check but answers in plain text; every error here is JSON."""

    def __init__(self, app: ASGIApp, names: frozenset[str] | None) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.names is not None:
            header = _header(scope, b"host")
            name, local = _local_host(header)
            if header and not local and name not in self.names:
                await _reply(
                    send,
                    400,
                    f"this API does not answer to the host name {name[:255]!r}: add it to "
                    "MNEMO_ALLOWED_HOSTS (without API keys only IP addresses, localhost and "
                    "the names listed there are served)",
                )
                return
        await self.app(scope, receive, send)


#: A client's own request id is kept when it looks like one (a proxy's, a trace's).
_CLIENT_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class RequestId:
    """Give every request an id: the client's ``X-Request-ID`` when it is a plain token of
    at most 128 characters, else a new one. It is in the answer's ``X-Request-ID``, in every
    log line written while the request is handled (``request_id``) and in the body of a
    500, so a user's report leads to the server's log. (asgi-correlation-id does this too,
    but takes only UUIDs from clients by default; these twenty lines need no dependency.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        # 128 random bits as hex, as uuid4().hex but without building a UUID (a quarter of
        # the cost; this runs for every request).
        rid = given if _CLIENT_REQUEST_ID.fullmatch(given) else os.urandom(16).hex().encode()
        text = rid.decode()
        scope.setdefault("state", {})["request_id"] = text

        async def send_with_id(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg["headers"] = [*msg.get("headers", ()), (b"x-request-id", rid)]
            await send(msg)

        # bind/reset rather than structlog's bound_contextvars(): the same, without a
        # generator-based context manager per request.
        tokens = structlog.contextvars.bind_contextvars(request_id=text)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
