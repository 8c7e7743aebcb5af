"""The HTTP protocol the API is served with: uvicorn's httptools protocol (what its ``auto``
picks when httptools is installed, as it always is with the API), except for one answer.

A request the HTTP parser itself refuses never reaches the application: a URL over its limit
(65,535 bytes, httptools' ``MAX_URL_LENGTH``), bytes that are not HTTP.
uvicorn answers it with a ``400`` in ``text/plain``, while every other error of the API is a
JSON ``Problem`` and the OpenAPI schema says so (schemathesis found the mismatch with long
query strings). The parser runs before any ASGI code, so no middleware or exception handler
can answer it: the protocol has to. The override is uvicorn's own ``send_400_response``
hook, the one place it writes that answer."""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: What a client is told; the parser's own reason is not passed on by uvicorn.
UNREADABLE = (
    "invalid HTTP request: the server could not parse it (a URL is at most 65,535 bytes; "
    "send large input in a request body)"
)


class JsonErrorsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering an unparseable request with a JSON 400."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"detail": UNREADABLE}).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: " + str(len(body)).encode("ascii") + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()
