"""The CLI's argument parsing (global options on either side of the subcommand) and the
workers table on terminals of several widths."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from mnemo_cli.main import build_parser, print_workers

JOB = "0b7c8a1e-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    ("argv", "json_out", "url"),
    [
        (["jobs", "show", JOB], False, None),
        (["--json", "jobs", "show", JOB], True, None),
        (["jobs", "show", JOB, "--json"], True, None),
        (["jobs", "--json", "show", JOB], True, None),
        (["--json", "jobs", "show", JOB, "--watch"], True, None),
        (["--url", "http://a:1", "jobs", "list"], False, "http://a:1"),
        (["jobs", "list", "--url", "http://a:1", "--json"], True, "http://a:1"),
        (["events", "add", "a note", "--meta", "k=v", "--json"], True, None),
        (["search", "the key", "--json", "--limit", "3"], True, None),
        (["code", "search", "retry", "--json", "--url", "http://b:2"], True, "http://b:2"),
        (["dlq", "list", "embed", "--json"], True, None),
        (["workers", "--json"], True, None),
        (["--url", "http://a:1", "status", "--url", "http://c:3"], False, "http://c:3"),
    ],
)
def test_global_options_go_before_or_after_the_subcommand(
    argv: list[str], json_out: bool, url: str | None
) -> None:
    args = build_parser().parse_args(argv)
    assert args.json is json_out and args.url == url


def test_unknown_options_are_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["jobs", "show", JOB, "--jsonn"])
    assert "unrecognized arguments" in capsys.readouterr().err


NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
WORKERS = {
    "workers": [
        {
            "id": "embedder-3f2a9c8b7d1e-1-76997b",  # a container's: hostname, pid, suffix
            "kind": "embedder",
            "alive": True,
            "last_heartbeat": "2026-12-01T11:59:57.5+00:00",
            "processed": 1234567,
            "failed": 3,
            "batch_size": 64,
        },
        {
            "id": "indexer-build-machine-of-the-ops-team-48213-a1b2c3",
            "kind": "indexer",
            "alive": False,
            "last_heartbeat": "2026-12-01T09:00:00+00:00",
            "processed": 12,
            "failed": 0,
            "batch_size": 16,
        },
    ]
}


def render(width: int, data: dict) -> list[str]:
    out = Console(file=io.StringIO(), width=width, color_system=None)
    print_workers(data, out, NOW)
    return [line.rstrip() for line in out.file.getvalue().splitlines()]  # type: ignore[attr-defined]


@pytest.mark.parametrize("width", [120, 80, 60])
def test_worker_ids_are_never_cut(width: int) -> None:
    lines = render(width, WORKERS)
    for w in WORKERS["workers"]:
        assert any(w["id"] in line for line in lines), (width, lines)
    text = "\n".join(lines)
    assert "…" not in text
    assert "2s ago" in text and "3h ago" in text and "1234567" in text


def test_a_table_when_it_fits() -> None:
    (first,) = WORKERS["workers"][:1]
    lines = render(80, {"workers": [first]})
    assert lines[0].split() == ["id", "kind", "heartbeat", "processed", "failed", "batch"]
    assert lines[2].split() == [first["id"], "embedder", "2s", "ago", "1234567", "3", "64"]


def test_the_default_url_follows_the_local_api_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from mnemo_cli.client import Client, seg

    monkeypatch.delenv("MNEMO_URL", raising=False)
    monkeypatch.delenv("MNEMO_API_PORT", raising=False)
    assert Client().url == "http://127.0.0.1:8000"
    monkeypatch.setenv("MNEMO_API_PORT", "8731")
    assert Client().url == "http://127.0.0.1:8731"
    monkeypatch.setenv("MNEMO_URL", "http://api:8000/")
    assert Client().url == "http://api:8000"
    assert seg("a/../b?c#d e") == "a%2F..%2Fb%3Fc%23d%20e"


def test_a_worker_that_stopped_is_not_called_dead() -> None:
    stopped = dict(WORKERS["workers"][1], stopped_at="2026-12-01T09:00:01+00:00")
    text = "\n".join(render(120, {"workers": [stopped]}))
    assert "stopped" in text and "dead" not in text
    assert "dead" in "\n".join(render(120, {"workers": [WORKERS["workers"][1]]}))


def test_dead_letter_ids_and_times_are_never_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    from mnemo_cli import ops

    out = Console(file=io.StringIO(), width=80, color_system=None)
    monkeypatch.setattr(ops, "console", out)
    letter = {
        "id": 12,
        "dead_lettered_at": "2026-12-06T12:48:18.616891+00:00",
        "job_id": JOB,
        "kind": "chunk",
        "items": 3,
        "attempts": 5,
        "error": "delivered 5 times without success; the model refused the text " * 2,
    }
    ops._letters_table({"queue": "embed_dlq", "messages": [letter]})
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert JOB in text and letter["dead_lettered_at"] in text and "…" not in text


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from mnemo_cli.main import main

    with pytest.raises(SystemExit) as done:
        main(argv)
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_errors_are_json_with_json(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listens on port 1: the error is the CLI's own, as JSON for scripts, and
    without a made-up status for human eyes."""
    code, out, err = run_cli(["--url", "http://127.0.0.1:1", "--json", "jobs", "list"], capsys)
    assert code == 1 and out == ""
    body = json.loads(err)
    assert body["status"] is None and "cannot reach http://127.0.0.1:1" in body["error"]
    code, _, err = run_cli(["--url", "http://127.0.0.1:1", "jobs", "list"], capsys)
    assert code == 1 and "cannot reach" in err and "HTTP 0" not in err


def test_an_empty_event_is_refused_before_any_request(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["--url", "http://127.0.0.1:1", "events", "add", "  "], capsys)
    assert code == 2 and "text is empty" in err and "cannot reach" not in err


@pytest.mark.parametrize(
    ("pair", "value"),
    [
        ("n=42", 42),
        ("ok=true", True),
        ("none=null", None),
        ('obj={"a":1}', {"a": 1}),
        ("word=garden", "garden"),
        # Kept as typed: JSON would write these back otherwise (and a filter on the text
        # would then never match), or they are not JSON at all (the API refuses NaN).
        ("version=1.10", "1.10"),
        ("e=1e3", "1e3"),
        ("x=NaN", "NaN"),
        ("y=-Infinity", "-Infinity"),
    ],
)
def test_metadata_values_are_json_only_when_they_read_back_the_same(
    pair: str, value: object
) -> None:
    from mnemo_cli.main import _meta

    key = pair.partition("=")[0]
    assert _meta([pair]) == {key: value}
    assert json.dumps(_meta([pair]))  # always sendable


def test_a_bad_filter_pair_names_the_filter_option() -> None:
    from mnemo_cli.main import _meta

    with pytest.raises(SystemExit, match="--filter wants key=value"):
        _meta(["bad"], "--filter")


def test_a_write_is_retried_once_with_the_same_idempotency_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first try gets no answer (the API may have stored it); the retry carries the same
    key, so the API answers it from the first (tests/integration/test_idempotency.py)."""
    import httpx

    from mnemo_cli import client
    from mnemo_cli.client import ApiError, Client

    keys: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        if len(keys) == 1:
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(202, json={"event_id": "e", "job_id": "j", "status": "queued"})

    monkeypatch.setattr(client, "RETRY_AFTER_S", 0.0)
    c = Client("http://api.test")
    c._http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(answer))
    assert client.post_once(c, "/v1/events", json={"content": {"text": "x"}})["event_id"] == "e"
    assert len(keys) == 2 and keys[0] == keys[1] and len(keys[0]) == 36
    # An answer, even an error, is not retried; a new write has a new key.
    keys.clear()
    c._http = httpx.Client(
        base_url="http://api.test",
        transport=httpx.MockTransport(
            lambda r: keys.append(r.headers["Idempotency-Key"]) or httpx.Response(503, json={})
        ),
    )
    with pytest.raises(ApiError):
        client.post_once(c, "/v1/events", json={"content": {"text": "x"}})
    assert len(keys) == 1


def test_an_index_upload_is_retried_once_with_the_same_key_and_archive(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``mnemo index`` sends its upload with a key of its own, and sends the same upload
    again with it when the first got no answer; a new upload has a new key."""
    import httpx

    from mnemo_cli import client, code
    from mnemo_cli.client import Client

    (tmp_path / "util.py").write_text("def add(a, b):\n    return a + b\n")
    sent: list[tuple[str, bytes]] = []
    timeouts = 1

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal timeouts
        boundary = request.headers["content-type"].split("boundary=")[1].encode()
        sent.append((request.headers["Idempotency-Key"], request.read().replace(boundary, b"")))
        if timeouts:
            timeouts -= 1
            raise httpx.ReadTimeout("no answer", request=request)
        accepted = {"job_id": "j", "files": 1, "files_changed": 1, "files_unchanged": 0}
        return httpx.Response(202, json={**accepted, "files_removed": 0, "skipped": []})

    monkeypatch.setattr(client, "RETRY_AFTER_S", 0.0)
    c = Client("http://api.test")
    c._http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(answer))
    args = build_parser().parse_args(["index", str(tmp_path), "--repository", "demo", "--json"])
    assert code.cmd_index(args, c) == 0
    assert len(sent) == 2 and sent[0] == sent[1] and len(sent[0][0]) == 36
    assert b"def add(a, b)" not in sent[0][1]  # the archive, gzipped
    assert code.cmd_index(args, c) == 0  # answered at once
    assert len(sent) == 3 and sent[2][0] != sent[0][0]


HOSTILE = "[/INST] a [bold]memory[/bold] \x1b]0;PWNED\x07\x1b[2J done"


def test_stored_text_prints_as_it_is_without_driving_the_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Markup in a memory printed literally (``[/x]`` crashed the CLI, ``[bold]`` was
    eaten), and escape sequences written out instead of sent to the terminal."""
    from mnemo_cli import code, main, ops

    def rendered(console: Console, show: Callable[[], object]) -> str:
        buffer = io.StringIO()
        monkeypatch.setattr(console, "file", buffer)
        show()
        return buffer.getvalue()

    out = rendered(
        main.console,
        lambda: main._show_job(
            {
                "id": JOB,
                "kind": "embed_events",
                "status": "failed",
                "progress": {"done": 0, "total": 1, "failed": 1},
                "error": HOSTILE,
                "failures": [{"item_kind": "event", "item_id": "e", "error": HOSTILE}],
            }
        ),
    )
    assert out.count("[/INST] a [bold]memory[/bold]") == 2
    assert "\x1b" not in out and "\x07" not in out and out.count("\\x1b]0;PWNED\\x07") == 2
    letter = {
        "id": 1,
        "dead_lettered_at": "2026-12-01T12:00:00+00:00",
        "job_id": None,
        "kind": "[red]",
        "items": None,
        "attempts": 5,
        "error": HOSTILE,
    }
    for width in (200, 60):  # a table, and a block per letter
        monkeypatch.setattr(ops.console, "width", width)
        out = rendered(
            ops.console, lambda: ops._letters_table({"queue": "q", "messages": [letter]})
        )
        assert "\x1b" not in out and "[red]" in out and "[/INST]" in out
    out = rendered(
        code.console,
        lambda: code.console.print(
            code._symbol_rows("callers", [{"qualified_name": "[/x]", "path": None}])
        ),
    )
    assert "[/x]" in out


def test_help_is_plain_text() -> None:
    """--help showed the module docstring's reST markup (``mnemo``, ``--json``)."""
    text = build_parser().format_help()
    assert "``" not in text and text.count("mnemo: run MnemoLite locally") == 1
