"""`mnemo up` (what `make run` runs): embedded PostgreSQL, migrations, the API and an
embedder as supervised children; Ctrl-C, SIGTERM and SIGHUP (the terminal closed) stop
everything; a supervisor killed outright takes its children with it; a second start keeps
the data; a taken API port is refused up front."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from mnemo_core.localpg import free_port, port_in_use
from tests.helpers import BIN, Proc, service_env, wait_for_sync, wait_ready

pytestmark = pytest.mark.acceptance


@pytest.fixture
def tmp_path(pg_home: Path) -> Path:
    """Each test's folder, for ``mnemo up``'s data and the logs, is outside pytest's
    temporary root: PostgreSQL runs in it (tests/conftest.py, ``_outside_pytest_temp``)."""
    return pg_home


def start_up(tmp: Path, api_port: int, db_port: int, name: str) -> Proc:
    env = service_env(
        MNEMO_DATA_DIR=str(tmp / "data"),
        MNEMO_API_PORT=str(api_port),
        MNEMO_DB_PORT=str(db_port),
        MNEMO_EMBEDDING_MODEL="hash-384",
        MNEMO_HEARTBEAT_S="0.5",
        MNEMO_WORKER_DEAD_AFTER_S="3",
    )
    # Proc starts it in a session of its own: like a shell job, it leads its process group.
    return Proc(name, ["mnemo", "up"], env, tmp).start()


def json_objects(text: str) -> list[dict]:
    """Every line of the output, each of which must be one JSON object."""
    out = []
    for line in text.splitlines():
        obj = json.loads(line)  # raises on a line that is not JSON
        assert isinstance(obj, dict), line
        out.append(obj)
    return out


def postmaster_pid(tmp: Path) -> int:
    return int((tmp / "data" / "pg" / "postmaster.pid").read_text().splitlines()[0])


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def everything_started(up_pid: int, url: str, tmp: Path) -> list[int]:
    """The pids of every process the running `mnemo up` stands for: its children (API,
    embedder, indexer and the indexer's parser processes) and PostgreSQL's processes."""

    def workers_live() -> bool:
        ws = httpx.get(f"{url}/v1/workers").json()["workers"]
        return {w["kind"] for w in ws if w["alive"]} == {"embedder", "indexer"}

    wait_for_sync(workers_live, timeout=60, what="an embedder and an indexer")
    children = psutil.Process(up_pid).children(recursive=True)
    names = {" ".join(p.cmdline()) for p in children}
    for service in ("mnemo-api", "mnemo-embedder", "mnemo-indexer"):
        assert any(service in n for n in names), names
    pm = postmaster_pid(tmp)
    return [p.pid for p in children] + [pm] + [p.pid for p in psutil.Process(pm).children()]


def wait_gone(pids: list[int], timeout: float = 60) -> None:
    wait_for_sync(
        lambda: [p for p in pids if alive(p)] == [],
        timeout=timeout,
        what="every process to be gone",
    )


def test_up_serves_supervises_stops_and_keeps_data(tmp_path: Path) -> None:
    api_port, db_port = free_port(), free_port()
    url = f"http://127.0.0.1:{api_port}"
    up = start_up(tmp_path, api_port, db_port, "up-1")
    try:
        wait_ready(url, up, timeout=90)
        r = httpx.post(f"{url}/v1/events", json={"content": {"text": "remember the milk"}})
        assert r.status_code == 202
        event_id, job_id = r.json()["event_id"], r.json()["job_id"]
        wait_for_sync(
            lambda: httpx.get(f"{url}/v1/jobs/{job_id}").json()["status"] == "succeeded",
            timeout=60,
            what="the job",
        )

        # A worker that dies is restarted by the runner.
        workers = httpx.get(f"{url}/v1/workers").json()["workers"]
        first = [w for w in workers if w["alive"] and w["kind"] == "embedder"]
        assert len(first) == 1

        os.kill(first[0]["pid"], signal.SIGKILL)

        def replaced() -> bool:
            ws = httpx.get(f"{url}/v1/workers").json()["workers"]
            return any(w["alive"] and w["pid"] != first[0]["pid"] for w in ws)

        wait_for_sync(replaced, timeout=60, what="a restarted embedder")
        r = httpx.get(f"{url}/v1/search", params={"q": "milk", "limit": 1})
        assert r.status_code == 200 and r.json()["results"][0]["id"] == event_id
    finally:
        up.signal(signal.SIGINT)
        code = up.wait(60)
    assert code == 0, up.log()[-3000:]
    assert not port_in_use(api_port) and not port_in_use(db_port)

    # In JSON mode every line is a JSON object tagged with the process that printed it:
    # the runner's own events and PostgreSQL's set-up ("up"), and each child's lines.
    lines = json_objects(up.log())
    assert all("process" in o for o in lines), [o for o in lines if "process" not in o][:3]
    ours = {o["event"] for o in lines if o["process"] == "up"}
    assert {"mnemo_up", "child_exited", "stopping_children", "postgres_stopped"} <= ours
    assert {o["process"] for o in lines} >= {"up", "api", "embedder-1", "indexer-1"}
    assert all(o.get("service") for o in lines if o.get("event") != "child_output")

    again = start_up(tmp_path, api_port, db_port, "up-2")
    try:
        wait_ready(url, again, timeout=90)
        r = httpx.get(f"{url}/v1/events/{event_id}")
        assert r.status_code == 200 and r.json()["content"] == {"text": "remember the milk"}
    finally:
        again.signal(signal.SIGTERM)
        assert again.wait(60) == 0
    assert not port_in_use(db_port)


def test_sighup_stops_every_child_and_postgres(tmp_path: Path) -> None:
    """Closing the terminal sends SIGHUP to the foreground process group (make and
    `mnemo up`): the same clean stop as Ctrl-C, nothing left behind, and the next start
    works on the same data and ports."""
    api_port, db_port = free_port(), free_port()
    url = f"http://127.0.0.1:{api_port}"
    up = start_up(tmp_path, api_port, db_port, "up-hup")
    try:
        wait_ready(url, up, timeout=90)
        r = httpx.post(f"{url}/v1/events", json={"content": {"text": "before the hangup"}})
        event_id = r.json()["event_id"]
        pids = everything_started(up.pid, url, tmp_path)
        os.killpg(up.pid, signal.SIGHUP)
        assert up.wait(60) == 0, up.log()[-3000:]
    finally:
        up.stop()
    wait_gone(pids)
    assert not port_in_use(api_port) and not port_in_use(db_port)
    assert not (tmp_path / "data" / "pg" / "postmaster.pid").exists()

    again = start_up(tmp_path, api_port, db_port, "up-hup-2")
    try:
        wait_ready(url, again, timeout=90)
        assert httpx.get(f"{url}/v1/events/{event_id}").status_code == 200
    finally:
        again.signal(signal.SIGTERM)
        assert again.wait(60) == 0
    assert not port_in_use(api_port) and not port_in_use(db_port)


def test_a_closed_terminal_stops_everything_without_a_sighup(tmp_path: Path) -> None:
    """`make run` in a terminal that make itself leads (``tmux new "make run"``): closing
    it sends SIGHUP to make alone, which waits for its children. `mnemo up` notices that
    its terminal is gone and stops everything the same way."""
    api_port, db_port = free_port(), free_port()
    url = f"http://127.0.0.1:{api_port}"
    env = service_env(
        MNEMO_DATA_DIR=str(tmp_path / "data"),
        MNEMO_API_PORT=str(api_port),
        MNEMO_DB_PORT=str(db_port),
        MNEMO_EMBEDDING_MODEL="hash-384",
        MNEMO_HEARTBEAT_S="0.5",
    )
    master, slave = pty.openpty()
    # The session leader (make's part) catches SIGHUP and waits for `mnemo up`.
    leader = subprocess.Popen(
        ["setsid", "--ctty", "bash", "-c", 'trap : HUP; "$0" up; exit $?', str(BIN / "mnemo")],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    output = bytearray()
    draining = threading.Event()
    draining.set()

    def drain() -> None:  # a terminal that is not read blocks its writers
        while draining.is_set():
            if select.select([master], [], [], 0.1)[0]:
                try:
                    output.extend(os.read(master, 65536))
                except OSError:
                    return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:

        def ready() -> bool:
            assert leader.poll() is None, output.decode(errors="replace")[-3000:]
            try:
                return httpx.get(f"{url}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for_sync(ready, timeout=90, interval=0.2, what="mnemo up ready")
        (up,) = psutil.Process(leader.pid).children()
        pids = everything_started(up.pid, url, tmp_path)
        draining.clear()
        reader.join()
        os.close(master)  # the terminal closes
        assert leader.wait(60) == 0
    finally:
        if leader.poll() is None:
            leader.kill()
    wait_gone([up.pid, *pids])
    assert not port_in_use(api_port) and not port_in_use(db_port)


def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves the supervisor no chance to stop anything: its children stop
    themselves (PR_SET_PDEATHSIG), so the API port is free again; PostgreSQL, a daemon of
    its own, is adopted by the next `mnemo up`, which then stops it."""
    api_port, db_port = free_port(), free_port()
    url = f"http://127.0.0.1:{api_port}"
    up = start_up(tmp_path, api_port, db_port, "up-kill")
    try:
        wait_ready(url, up, timeout=90)
        pm = postmaster_pid(tmp_path)
        everything_started(up.pid, url, tmp_path)
        assert len(psutil.Process(up.pid).children()) == 3  # api, embedder, indexer
        children = [c.pid for c in psutil.Process(up.pid).children(recursive=True)]
        up.signal(signal.SIGKILL)
        up.wait(10)
    finally:
        up.stop()
    wait_gone(children, timeout=60)
    wait_for_sync(lambda: not port_in_use(api_port), timeout=30, what="the API port free")
    assert alive(pm)

    again = start_up(tmp_path, api_port, db_port, "up-kill-2")
    try:
        wait_ready(url, again, timeout=90)
        assert "postgres_already_running" in again.log()
    finally:
        again.signal(signal.SIGTERM)
        assert again.wait(60) == 0
    wait_gone([pm], timeout=30)
    assert not port_in_use(db_port)


def test_a_taken_api_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    api_port, db_port = free_port(), free_port()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", api_port))
        squatter.listen()
        started = time.monotonic()
        up = start_up(tmp_path, api_port, db_port, "up-taken")
        try:
            code = up.wait(60)
        finally:
            up.stop()
        assert code == 1
        assert time.monotonic() - started < 30  # refused, not crash-looping
    (line,) = [o for o in json_objects(up.log()) if o["event"] == "api_port_in_use"]
    assert line["level"] == "error" and line["port"] == api_port
    assert f"127.0.0.1:{api_port} is already in use (MNEMO_API_PORT)" in line["error"]
    assert not (tmp_path / "data" / "pg").exists() and not port_in_use(db_port)
