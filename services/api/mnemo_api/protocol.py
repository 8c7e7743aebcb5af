"""The HTTP protocol the API is served with: uvicorn's httptools protocol (what its ``auto``
picks when httptools is installed, as it always is with the API), with two changes at the
HTTP layer, below any ASGI code, where no middleware or exception handler can act:

- A request the HTTP parser refuses never reaches the application: a URL over its limit
  (65,535 bytes, httptools' ``MAX_URL_LENGTH``), bytes that are not HTTP. uvicorn answers it
  with a ``400`` in ``text/plain``, while every other error of the API is a JSON ``Problem``
  and the OpenAPI schema says so (schemathesis found the mismatch with long query strings).
  The override is uvicorn's own ``send_400_response`` hook, the one place it writes that
  answer.
- A request line and headers are bounded (``MAX_HEAD_BYTES``). uvicorn's httptools protocol
  has no such bound (its h11 protocol has ``h11_max_incomplete_event_size``): the parser
  buffers a header, and uvicorn the URL, until they end, so one client sending an endless
  header grew the API by the megabytes it sent (200 MB in a test). Past the bound the
  connection gets a JSON ``431`` and is closed: while the head is still arriving (counted
  per chunk read), and when it is complete (its size from the parsed line and headers: one
  chunk read can hold a whole head over the bound, and did, up to ~190 KiB).
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: The request line and headers of one request: the longest URL the parser takes, and as
#: much again for headers.
MAX_HEAD_BYTES = 128 * 1024
_HINT = "(a URL is at most 65,535 bytes; send large input in a request body)"
#: What a client whose request cannot be parsed is told; uvicorn does not pass on the
#: parser's reason.
UNREADABLE = f"invalid HTTP request: the server could not parse it {_HINT}"
HEAD_TOO_LARGE = f"request line and headers over {MAX_HEAD_BYTES:,} bytes {_HINT}"


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing; uvicorn then calls send_400_response."""


class JsonErrorsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering an unparseable request with a JSON 400 and
    an oversized request head with a JSON 431."""

    _in_head = True  # reading a request line and headers (a connection starts with one)
    _head_bytes = 0
    _head_over = False  # a complete head over the bound: the parser was stopped for it

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Counted before the parser saw the chunk and judged after: a chunk that completes
        # the headers may carry a body too, which is not the head's.
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self.logger.warning("Request head over %s bytes.", MAX_HEAD_BYTES)
            self._refuse(431, "Request Header Fields Too Large", HEAD_TOO_LARGE)

    def on_headers_complete(self) -> None:
        self._in_head = False
        # Only when the reads that held this head passed the bound (never on the hot path)
        # is its size, as sent less a little whitespace, worked out from the parsed parts.
        if self._head_bytes > MAX_HEAD_BYTES and self._head_size() > MAX_HEAD_BYTES:
            self._head_over = True
            raise _HeadTooLarge  # before uvicorn starts the request's cycle
        super().on_headers_complete()

    def _head_size(self) -> int:
        return len(self.url) + 20 + sum(len(n) + len(v) + 4 for n, v in self.headers)

    def on_message_complete(self) -> None:
        # What comes next on a kept-alive connection is the next request's head.
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._head_over:
            self.logger.warning("Request head over %s bytes.", MAX_HEAD_BYTES)
            self._refuse(431, "Request Header Fields Too Large", HEAD_TOO_LARGE)
        else:
            self._refuse(400, "Bad Request", UNREADABLE)

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        head = [f"HTTP/1.1 {status} {reason}\r\n".encode("ascii")]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: " + str(len(body)).encode("ascii") + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()
