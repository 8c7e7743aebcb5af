"""Code intelligence end to end: the stdlib's `json` package (code no one here wrote)
indexed through `mnemo index` by real mnemo-api, mnemo-indexer and mnemo-embedder
processes with the real model; searched by name and by meaning; callers; incremental
re-index; delete."""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mnemo_core.localpg import free_port
from tests.acceptance.test_spine import db_rows
from tests.helpers import BIN, Proc, service_env, wait_ready

pytestmark = [pytest.mark.acceptance, pytest.mark.model]


@pytest.fixture(scope="module")
def stack(module_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    logs = tmp_path_factory.mktemp("code-logs")
    port = free_port()
    env = service_env(
        MNEMO_DATABASE_URL=module_dsn,
        MNEMO_API_PORT=str(port),
        MNEMO_TORCH_THREADS="2",
        MNEMO_HEARTBEAT_S="1",
    )
    url = f"http://127.0.0.1:{port}"
    procs = [
        Proc("api", ["mnemo-api"], env, logs).start(),
        Proc("indexer", ["mnemo-indexer"], env, logs).start(),
        Proc("embedder", ["mnemo-embedder"], env, logs).start(),
    ]
    wait_ready(url, procs[0])
    yield {"url": url, "env": {**env, "MNEMO_URL": url}, "indexer": procs[1]}
    for p in procs:
        p.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stdlib")
    shutil.copytree(
        Path(sysconfig.get_paths()["stdlib"]) / "json",
        root / "json",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (root / ".gitignore").write_text("ignored_dir/\n")
    (root / "ignored_dir").mkdir()
    (root / "ignored_dir" / "secret.py").write_text("def hidden():\n    pass\n")
    (root / "node_modules").mkdir()
    (root / "node_modules" / "dep.js").write_text("function x() {}\n")
    (root / "logo.bin").write_bytes(b"\x89PNG\x00\x00\x00")
    return root


def mnemo(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mnemo"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def index(stack: dict, project: Path) -> dict:
    out = mnemo(
        stack["env"], "--json", "index", str(project), "--repository", "json", "--watch", "--prune"
    )
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


def chunk_count(dsn: str, where: str = "true") -> int:
    return db_rows(dsn, f"SELECT count(*) AS n FROM code_chunks WHERE {where}")[0]["n"]


def test_index_search_callers_reindex_delete(stack: dict, project: Path, module_dsn: str) -> None:
    url, env = stack["url"], stack["env"]
    first = index(stack, project)
    job = first["job"]
    assert job["status"] == "succeeded", job
    n_files = len(list((project / "json").glob("*.py")))
    assert first["upload"]["files"] == n_files + 1  # + .gitignore
    assert {s[0] for s in first["skipped_locally"]} == {"logo.bin"}
    assert job["result"]["files_indexed"] == n_files + 1 and job["result"]["symbols"] > 20
    assert job["detail"]["chunks"]["embedded"] == job["detail"]["chunks"]["total"] > 20
    paths = {r["path"] for r in db_rows(module_dsn, "SELECT path FROM code_files")}
    assert "ignored_dir/secret.py" not in paths and "node_modules/dep.js" not in paths

    # By name.
    r = httpx.get(f"{url}/v1/code/search", params={"q": "raw_decode", "repository": "json"})
    assert r.json()["results"][0]["qualified_name"] == "json.decoder.JSONDecoder.raw_decode"
    # By description, through the real model (the vector leg alone, then hybrid).
    described = {
        "parse a JSON document from a string": {
            "json.loads",
            "json.decoder.JSONDecoder.decode",
            "json.decoder.JSONDecoder.raw_decode",
        },
        "command line tool to validate and pretty print JSON": {"json.tool", "json.tool.main"},
    }
    for query, expected in described.items():
        for mode in ("vector", "hybrid"):
            r = httpx.get(
                f"{url}/v1/code/search",
                params={"q": query, "repository": "json", "mode": mode, "limit": 5},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            names = [x["qualified_name"] for x in r.json()["results"]]
            assert expected & set(names), (query, mode, names)
    # Callers, through the CLI.
    out = mnemo(env, "--json", "code", "callers", "json", "json.decoder.JSONDecoder.raw_decode")
    assert out.returncode == 0, out.stderr
    callers = {c["qualified_name"] for c in json.loads(out.stdout)}
    assert "json.decoder.JSONDecoder.decode" in callers
    # The symbol itself heads the human view; a short name is a 404 that names the symbol.
    out = mnemo(env, "code", "symbol", "json", "json.decoder.JSONDecoder.raw_decode")
    assert out.returncode == 0, out.stderr
    head = out.stdout.splitlines()[0].split()
    assert head[:2] == ["method", "json.decoder.JSONDecoder.raw_decode"], out.stdout
    assert head[2].startswith("json/decoder.py:"), out.stdout
    assert "def raw_decode(" in out.stdout and "callers of" in out.stdout
    out = mnemo(env, "code", "callers", "json", "raw_decode")
    assert out.returncode != 0
    assert "did you mean json.decoder.JSONDecoder.raw_decode" in out.stderr, out.stderr

    chunks_before = chunk_count(module_dsn)
    # Re-index, unchanged: nothing parsed, nothing embedded.
    again = index(stack, project)
    assert again["upload"]["files_unchanged"] == again["upload"]["files"]
    assert again["job"]["result"]["files_indexed"] == 0
    assert again["job"]["detail"]["chunks"]["total"] == 0

    # Change one file: only it is re-parsed; its old chunks are gone.
    tool = project / "json" / "tool.py"
    tool.write_text(tool.read_text().replace("def main():", "def main_entry():"))
    third = index(stack, project)
    assert third["upload"]["files_changed"] == 1
    assert third["job"]["status"] == "succeeded"
    assert third["job"]["result"]["files_indexed"] == 1
    names = {
        r["qualified_name"]
        for r in db_rows(
            module_dsn, "SELECT qualified_name FROM code_chunks WHERE path = 'json/tool.py'"
        )
    }
    assert "json.tool.main_entry" in names and "json.tool.main" not in names
    # Chunks of tool.py whose text did not change kept their vectors: few new embeddings.
    assert third["job"]["detail"]["chunks"]["total"] < 5
    assert chunk_count(module_dsn) == chunks_before
    assert chunk_count(module_dsn, "embedding_status <> 'done'") == 0

    out = mnemo(env, "code", "delete", "json")
    assert out.returncode == 0, out.stderr
    assert httpx.get(f"{url}/v1/code/repositories").json()["repositories"] == []
    assert chunk_count(module_dsn) == 0


def test_indexer_prints_only_json_lines_naming_its_work(stack: dict, tmp_path: Path) -> None:
    """Every line of a real indexer in JSON mode is one JSON object with its worker id; the
    lines about a message carry that message's id and its job's."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "util.py").write_text("def add(a, b):\n    return a + b\n")
    out = mnemo(stack["env"], "--json", "index", str(tmp_path), "--repository", "logs", "--watch")
    assert out.returncode == 0, out.stderr + out.stdout
    job_id = json.loads(out.stdout)["job"]["id"]
    lines = [json.loads(line) for line in stack["indexer"].log().splitlines()]
    assert all(isinstance(o, dict) and o["service"] == "indexer" for o in lines)
    (started,) = [o for o in lines if o["event"] == "worker_started"]
    assert {o.get("worker_id") for o in lines} == {started["worker_id"]}
    ours = [o for o in lines if o["event"] == "files_indexed" and o["job_id"] == job_id]
    assert ours and all(isinstance(o["msg_id"], int) for o in ours)


def test_cli_names_stay_inside_their_path_segment(stack: dict, tmp_path: Path) -> None:
    """A Ruby ``valid?`` reaches its symbol (the ``?`` used to start a query string and
    the CLI asked for ``valid``), and a name with ``/`` or ``..`` in it reaches its own
    route with a clear error, never another route (``code delete ../../events`` used to
    send ``DELETE /v1/events``)."""
    env = stack["env"]
    (tmp_path / "user.rb").write_text(
        "class User\n  def valid?\n    true\n  end\n\n  def save\n    valid?\n  end\nend\n"
    )
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    out = mnemo(env, "index", str(tmp_path), "--repository", "rb", "--watch")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "1 skipped" in out.stdout and "skipped logo.png: " in out.stdout, out.stdout
    out = mnemo(env, "--json", "code", "callers", "rb", "user.User.valid?")
    assert out.returncode == 0, out.stderr
    assert "user.User.save" in {c["qualified_name"] for c in json.loads(out.stdout)}
    for argv in (
        ["code", "delete", "../../events"],
        ["jobs", "show", "../queues"],
        ["code", "symbol", "rb", "x/../../../../repositories"],
    ):
        out = mnemo(env, *argv)
        assert out.returncode != 0, (argv, out.stdout)
        assert "Traceback" not in out.stderr + out.stdout, argv
        assert "HTTP 422" in out.stderr or "HTTP 404" in out.stderr, (argv, out.stderr)
    assert mnemo(env, "code", "delete", "rb").returncode == 0
