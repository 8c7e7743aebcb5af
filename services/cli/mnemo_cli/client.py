"""A small HTTP client for the API: MNEMO_URL, MNEMO_API_KEY, clear errors."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx


def seg(value: object) -> str:
    """A value as one path segment: ``/``, ``?``, ``#`` and ``..`` stay inside it (a Ruby
    ``valid?`` or a name with a slash reaches its route, never another)."""
    return quote(str(value), safe="")


def default_url() -> str:
    """MNEMO_URL, else the local API of ``make run`` on MNEMO_API_PORT (default 8000)."""
    port = os.environ.get("MNEMO_API_PORT") or "8000"
    return os.environ.get("MNEMO_URL") or f"http://127.0.0.1:{port}"


class ApiError(Exception):
    """An answer of the API (``status``), or no answer at all (``status`` 0)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail


class Client:
    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 30.0):
        self.url = (url or default_url()).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("MNEMO_API_KEY", "")
        headers = {"X-API-Key": key} if key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach {self.url}: {exc}") from exc
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ApiError(r.status_code, str(detail))
        return r.json() if r.content else None

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)


#: Seconds before the one retry of a write whose connection failed.
RETRY_AFTER_S = 1.0


def post_once(c: Client, path: str, **kw: Any) -> Any:
    """POST a write with an ``Idempotency-Key``, and once more with the same key when no
    answer came back (refused, reset, timed out): the first try may have been done, and the
    key makes the API answer the retry from it instead of doing the write twice (events
    stored twice, a second index job)."""
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    try:
        return c.post(path, headers=headers, **kw)
    except ApiError as exc:
        if exc.status:  # the API answered: nothing to retry
            raise
    time.sleep(RETRY_AFTER_S)
    return c.post(path, headers=headers, **kw)
