"""The local runner's pure parts: how it forwards a child's lines in JSON mode, the port
pre-flight, and log output that outlives its terminal."""

from __future__ import annotations

import io
import json
import socket

import pytest

from mnemo_cli.runner import json_line
from mnemo_core.localpg import can_bind, free_port
from mnemo_core.logging import LogStream
from mnemo_core.settings import SettingsError, load


def test_a_json_line_gets_the_process_that_printed_it() -> None:
    raw = json.dumps({"event": "worker_started", "service": "embedder", "n": 1}).encode()
    assert json.loads(json_line("embedder-2", raw + b"\n")) == {
        "process": "embedder-2",
        "event": "worker_started",
        "service": "embedder",
        "n": 1,
    }


@pytest.mark.parametrize("raw", [b"Traceback (most recent call last):\n", b"[1, 2]\n", b"\xff\n"])
def test_any_other_line_becomes_a_child_output_event(raw: bytes) -> None:
    obj = json.loads(json_line("api", raw))
    assert obj["process"] == "api" and obj["event"] == "child_output"
    assert obj["line"] == raw.decode(errors="replace").rstrip("\n") and obj["timestamp"]


def test_can_bind_says_no_while_something_listens() -> None:
    port = free_port()
    assert can_bind("127.0.0.1", port)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        assert not can_bind("127.0.0.1", port)
    assert can_bind("127.0.0.1", port)


class Hungup(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(5, "Input/output error")


def test_log_output_to_a_closed_terminal_is_dropped_not_raised() -> None:
    stream = LogStream(Hungup())
    assert stream.write("line\n") == 5
    stream.flush()
    assert stream.broken and not stream.isatty()
    ok = io.StringIO()
    good = LogStream(ok)
    good.write("kept\n")
    assert ok.getvalue() == "kept\n" and not good.broken


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MNEMO_EMBEDDING_DIM": "0"}, "MNEMO_EMBEDDING_DIM=0: must be between 1 and"),
        ({"MNEMO_EMBEDDING_DIM": "abc"}, "MNEMO_EMBEDDING_DIM=abc: Input should be a valid"),
        ({"MNEMO_LOG_FORMAT": "xml"}, "MNEMO_LOG_FORMAT=xml: String should match"),
    ],
)
def test_an_invalid_setting_is_named_by_its_variable(
    env: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as exc:
        load()
    assert str(exc.value).startswith(named)


@pytest.mark.parametrize(("dim", "ok"), [(1, True), (384, True), (2000, True), (2001, False)])
def test_the_embedding_dimension_stops_where_hnsw_does(
    dim: int, ok: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNEMO_EMBEDDING_DIM", str(dim))
    if ok:
        assert load().embedding_dim == dim
    else:
        with pytest.raises(SettingsError, match="MNEMO_EMBEDDING_DIM=2001: must be between 1"):
            load()
