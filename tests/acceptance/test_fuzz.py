"""schemathesis against the live OpenAPI schema of a running stack, with and without an API
key: no 5xx, no undocumented status, no response that breaks its schema. `make fuzz` runs
it longer (MNEMO_FUZZ_EXAMPLES)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnemo_core.localpg import free_port
from tests.helpers import BIN, Proc, service_env, wait_ready

pytestmark = pytest.mark.acceptance

KEY = "fuzz-key-0123456789"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


@pytest.fixture(scope="module")
def live(module_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = service_env(
        MNEMO_DATABASE_URL=module_dsn,
        MNEMO_API_PORT=str(port),
        MNEMO_API_KEYS=KEY,
        MNEMO_EMBEDDING_MODEL="hash-384",
    )
    procs = [
        Proc("api", ["mnemo-api"], env, logs).start(),
        Proc("embedder", ["mnemo-embedder"], env, logs).start(),
        Proc("indexer", ["mnemo-indexer"], env, logs).start(),
    ]
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, procs[0])
    yield url
    for p in procs:
        p.stop()


@pytest.mark.parametrize("with_key", [True, False], ids=["with-key", "without-key"])
def test_schemathesis_finds_nothing(live: str, with_key: bool, tmp_path: Path) -> None:
    examples = os.environ.get("MNEMO_FUZZ_EXAMPLES", "8")
    cmd = [
        str(BIN / "schemathesis"),
        "run",
        f"{live}/openapi.json",
        "--checks",
        # With the key, any other method gets a 405 whose Allow names the documented ones.
        # Without it, every path answers 401 first, whatever the method: a client without
        # a key is told nothing about the API.
        CHECKS + (",unsupported_method" if with_key else ""),
        "--max-examples",
        examples,
        # One worker thread: CPython 3.11.7 (this machine's) shares the AST constructor's
        # recursion counter between threads (gh-106905), and hypothesis parses source to
        # describe its filters, so two threads parsing at once fail with a spurious
        # "AST constructor recursion depth mismatch".
        "--workers",
        "1",
        "--suppress-health-check",
        "all",
        "--seed",
        "42",
    ]
    if with_key:
        cmd += ["--header", f"X-API-Key: {KEY}"]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_a_request_the_http_parser_refuses_gets_a_json_400(live: str) -> None:
    """A URL over httptools' limit never reaches the application; the server's answer is a
    JSON Problem like every other error (it was uvicorn's text/plain, found by `make fuzz`),
    and the server goes on serving. (http.client: httpx refuses to send such a URL.)"""
    import http.client
    import json
    from urllib.parse import urlsplit

    host, port = urlsplit(live).hostname, urlsplit(live).port

    def get(target: str) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request("GET", target)
            r = conn.getresponse()
            return r.status, r.getheader("content-type", ""), r.read()
        finally:
            conn.close()

    status, ctype, body = get("/v1/search?filter_metadata=" + "x" * 70_000)
    assert (status, ctype) == (400, "application/json")
    assert "65,535 bytes" in json.loads(body)["detail"]
    assert get("/health")[0] == 200
    # Just under the limit the request reaches the API, which then wants its key.
    target = "/v1/search?filter_metadata="
    status, ctype, _ = get(target + "x" * (65_535 - len(target)))
    assert (status, ctype) == (401, "application/json")


def test_a_request_head_is_bounded(live: str) -> None:
    """Headers that never end do not grow the API (uvicorn's httptools protocol buffers
    them whole): past 128 KiB of request line and headers the answer is a JSON 431 and the
    connection is closed; the API's memory stays put, and it goes on serving. Headers under
    the bound, on a kept-alive connection with bodies, are served as before."""
    import http.client
    import json
    import socket
    from urllib.parse import urlsplit

    import psutil

    from mnemo_api.protocol import MAX_HEAD_BYTES

    host, port = urlsplit(live).hostname, urlsplit(live).port
    assert host and port
    api = psutil.Process(
        next(
            c.pid
            for c in psutil.net_connections("tcp")
            if c.laddr.port == port and c.status == psutil.CONN_LISTEN
        )
    )
    rss_before = api.memory_info().rss

    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(b"y" * 65536)
                sent += 65536
        except OSError:
            pass  # the server closed the connection: what should happen
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    assert sent < 64 * 1024 * 1024, "the server read 64 MiB of one header"
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"content-type: application/json" in head
    assert f"{MAX_HEAD_BYTES:,} bytes" in json.loads(body)["detail"]
    assert api.memory_info().rss - rss_before < 32 * 1024 * 1024

    # A whole head over the bound in one write (read in one chunk, which used to let heads
    # of up to ~190 KiB through): 431 too.
    for pad in (MAX_HEAD_BYTES + 1024, 3 * MAX_HEAD_BYTES):
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: %b\r\n\r\n" % (b"p" * pad))
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except OSError:
                pass  # closed with some of the request unread: the answer came first
        assert answer.startswith(b"HTTP/1.1 431 "), (pad, answer[:200])

    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        for _ in range(3):
            conn.request(
                "POST", "/v1/events", body=b"{}" + b" " * 200_000, headers={"X-Pad": "p" * 60_000}
            )
            r = conn.getresponse()
            r.read()
            assert (r.status, r.getheader("content-type")) == (401, "application/json")
    finally:
        conn.close()
