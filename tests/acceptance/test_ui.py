"""The stack's own commands as plain processes, and the operator page in real headless
Chromium (Debian's chromium + chromedriver; nothing downloaded).

The container services' commands and health checks are read from docker-compose.yml and
run here as processes: ``mnemo migrate`` on an empty database, ``mnemo-api`` with an API
key, ``mnemo-embedder``. The browser enters the key once, sees the queue names and numbers,
sees the depth change after events are posted and again once the embedder drains them,
replays a dead letter and opens a failed job's error. The screenshot is kept as
tests/artifacts/ui.png. Against an API without keys, a page of another site tries to upload
an archive, and a page under a name resolved to 127.0.0.1 (DNS rebinding) tries to read it:
both are refused."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mnemo_core.localpg import LocalPostgres, free_port
from mnemo_embedder.model import POISON_MARKER
from tests.helpers import BIN, Proc, admin_sql, service_env, wait_for_sync, wait_ready

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
KEY = "ui-test-key"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REBOUND = "rebind.test"


def compose_command(name: str) -> list[str]:
    return list(SERVICES[name]["command"])


def compose_check(name: str, port: int) -> list[str]:
    """A service's health check, pointed at this test's port, run with this venv."""
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[0] == "CMD"
    argv = [a.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for a in test[1:]]
    first = sys.executable if argv[0] == "python" else str(BIN / argv[0])
    return [first, *argv[1:]]


@pytest.fixture(scope="module")
def stack(pg: LocalPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    name = f"ui_{uuid.uuid4().hex[:12]}"
    admin_sql(pg, f"CREATE DATABASE {name}")  # empty: `mnemo migrate` builds everything
    logs = tmp_path_factory.mktemp("ui-logs")
    port = free_port()
    env = service_env(
        MNEMO_DATABASE_URL=pg.dsn(name),
        MNEMO_API_PORT=str(port),
        MNEMO_API_KEYS=KEY,
        MNEMO_EMBEDDING_MODEL="hash-384",
        MNEMO_HEARTBEAT_S="1",
        MNEMO_OPS_SAMPLE_S="1",
        MNEMO_MAX_ATTEMPTS="1",
        MNEMO_MESSAGE_BATCH="1",
    )
    migrate = Proc("migrate", compose_command("migrate"), env, logs).start()
    assert migrate.wait(120) == 0, migrate.log()
    procs = [Proc("api", compose_command("api"), env, logs).start()]
    url = f"http://127.0.0.1:{port}"
    state = {"url": url, "env": env, "logs": logs, "port": port, "procs": procs}
    try:
        wait_ready(url, procs[0])
        yield state
    finally:
        for p in state["procs"]:
            p.stop()
        admin_sql(pg, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: run `make tools` (Debian chromium, chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1500",
        # What DNS rebinding achieves: a name of the attacker's resolving to 127.0.0.1.
        f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for CSP
    # An explicit driver path: selenium-manager never runs, nothing is downloaded.
    service = Service(executable_path=CHROMEDRIVER, log_output=str(profile / "driver.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def text(driver: Any, selector: str) -> str | None:
    """Text of the first match, read in one script call (the page re-renders every 2 s)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
        selector,
    )


def click(driver: Any, selector: str) -> bool:
    return bool(
        driver.execute_script(
            "const e = document.querySelector(arguments[0]); if (e) e.click(); return !!e;",
            selector,
        )
    )


def cell(driver: Any, queue: str, field: str) -> str | None:
    return text(driver, f'tr[data-queue="{queue}"] td[data-field="{field}"]')


def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    return wait_for_sync(check, timeout=timeout, interval=0.2, what=what)


def post_events(url: str, texts: list[str]) -> list[str]:
    jobs = []
    for t in texts:
        r = httpx.post(
            f"{url}/v1/events", json={"content": {"text": t}}, headers={"X-API-Key": KEY}
        )
        assert r.status_code == 202, r.text
        jobs.append(r.json()["job_id"])
    return jobs


def mnemo(stack: dict, *args: str) -> Any:
    env = {**stack["env"], "MNEMO_URL": stack["url"], "MNEMO_API_KEY": KEY}
    out = subprocess.run(
        [str(BIN / "mnemo"), "--json", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_api_health_check_passes(stack: dict) -> None:
    check = compose_check("api", stack["port"])
    assert subprocess.run(check, timeout=30).returncode == 0


def test_operator_page(stack: dict, browser: Any, artifacts: Path) -> None:
    url = stack["url"]
    browser.get(f"{url}/ui")
    # Keys are set: the shell loads without one and asks for it; data needs it.
    until(lambda: browser.find_element("id", "key-form").is_displayed(), "the key form")
    browser.find_element("id", "key-input").send_keys(KEY)
    browser.find_element("id", "key-save").click()
    until(lambda: cell(browser, "embed", "depth") == "0", "the embed queue at depth 0")
    for queue in ("embed", "embed_query", "index"):
        assert cell(browser, queue, "depth") is not None, queue
    assert browser.execute_script("return sessionStorage.getItem('mnemo_api_key')") == KEY

    post_events(url, [f"operator page note {i}" for i in range(6)])
    until(lambda: cell(browser, "embed", "depth") == "6", "depth 6 on the page")
    until(
        lambda: text(browser, 'svg[data-chart="embed"] polyline') is not None,
        "the embed depth chart",
    )
    browser.save_screenshot(str(artifacts / "ui-backlog.png"))

    embedder = Proc("embedder", compose_command("embedder"), stack["env"], stack["logs"])
    stack["procs"].append(embedder.start())
    until(lambda: cell(browser, "embed", "depth") == "0", "the embedder to drain the queue")
    until(lambda: text(browser, "#workers tr[data-worker] td:nth-child(2)") == "embedder", "worker")
    check = compose_check("embedder", stack["port"])
    assert subprocess.run(check, env=stack["env"], timeout=30).returncode == 0

    # A poison message is dead-lettered (MNEMO_MAX_ATTEMPTS=1): replay it from the page.
    [bad_job] = post_events(url, [f"broken {POISON_MARKER} note"])
    until(lambda: cell(browser, "embed", "dead_letters") == "1", "one dead letter")
    letters = mnemo(stack, "dlq", "list", "embed")["messages"]
    assert [m["job_id"] for m in letters] == [bad_job]
    until(lambda: click(browser, 'button[data-replay="embed"]'), "the replay button")
    until(lambda: text(browser, 'button[data-replay="embed"]') == "confirm replay", "arming")
    click(browser, 'button[data-replay="embed"]')
    until(lambda: "replayed 1 dead letters" in (text(browser, "#notice") or ""), "replayed")
    # Still poison: it comes back to the dead-letter queue as a new letter, counted once.
    again = until(
        lambda: [
            m
            for m in mnemo(stack, "dlq", "list", "embed")["messages"]
            if m["id"] != letters[0]["id"]
        ],
        "the replayed message dead-lettered again",
    )
    assert [m["job_id"] for m in again] == [bad_job]
    job = httpx.get(f"{url}/v1/jobs/{bad_job}", headers={"X-API-Key": KEY}).json()
    assert job["status"] == "failed" and job["progress"] == {"total": 1, "done": 0, "failed": 1}
    # 6 notes + 1 poison + 1 replay were sent; the page catches up with all of it.
    until(
        lambda: (
            [cell(browser, "embed", f) for f in ("total_messages", "depth", "dead_letters")]
            == ["8", "0", "1"]
        ),
        "the page to show the replayed message back in the dead-letter queue",
    )

    # Click through a failed job to its error.
    until(lambda: click(browser, f'tr[data-job="{bad_job}"].clickable'), "the failed job row")
    until(lambda: "poison" in (text(browser, "#detail-body") or ""), "the job's error")
    browser.save_screenshot(str(artifacts / "ui.png"))
    assert (artifacts / "ui.png").stat().st_size > 10_000
    # The page's Content-Security-Policy refused nothing it does (its style, its script,
    # the progress bars' widths, its fetches).
    refused = [
        e["message"] for e in browser.get_log("browser") if "Security Policy" in e["message"]
    ]
    assert not refused, refused

    workers = mnemo(stack, "workers")["workers"]
    assert [w["kind"] for w in workers if w["alive"]] == ["embedder"]
    status = mnemo(stack, "status")
    assert status["ready"]["status"] == "ready"
    assert {q["queue"]: q["dead_letters"] for q in status["queues"]}["embed"] == 1


def test_compose_indexer_runs_and_passes_its_check(stack: dict) -> None:
    indexer = Proc("indexer", compose_command("indexer"), stack["env"], stack["logs"])
    stack["procs"].append(indexer.start())

    def alive() -> bool:
        assert indexer.proc is not None
        if indexer.proc.poll() is not None:
            raise AssertionError(f"the indexer exited:\n{indexer.log()[-3000:]}")
        r = httpx.get(f"{stack['url']}/v1/workers", headers={"X-API-Key": KEY})
        return any(w["kind"] == "indexer" and w["alive"] for w in r.json()["workers"])

    until(alive, "a live indexer", timeout=60)
    check = compose_check("indexer", stack["port"])
    assert subprocess.run(check, env=stack["env"], timeout=30).returncode == 0


#: Posts an archive to the index route as a form would, from whatever page is open.
_FETCH_FORM = """
const [target, b64, done] = arguments;
const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
const form = new FormData();
form.append("repository", "victim");
form.append("prune", "true");
form.append("archive", new Blob([bytes], {type: "application/gzip"}), "victim.tgz");
const mode = new URL(target).origin === location.origin ? "same-origin" : "no-cors";
fetch(target, {method: "POST", mode, body: form})
  .then(r => done(mode + " " + r.status), e => done("error " + e));
"""


@pytest.fixture(scope="module")
def open_api(stack: dict) -> str:
    """An API without keys on the stack's database, on loopback as `make run` starts it."""
    port = free_port()
    env = {k: v for k, v in stack["env"].items() if k != "MNEMO_API_KEYS"}
    env["MNEMO_API_PORT"] = str(port)
    api = Proc("api-nokeys", compose_command("api"), env, stack["logs"])
    stack["procs"].append(api.start())
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, api)
    return url


def repositories(url: str) -> list[str]:
    r = httpx.get(f"{url}/v1/code/repositories")
    return [x["name"] for x in r.json()["repositories"]]


def test_a_page_of_another_site_cannot_write(stack: dict, open_api: str, browser: Any) -> None:
    """The attack: a page of any site posts a form to an API without keys. Real Chromium
    marks it cross-site; the API refuses it. The same request from the API's own origin
    goes through."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"def planted():\n    return 1\n"
        info = tarfile.TarInfo("planted.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    b64 = base64.b64encode(buf.getvalue()).decode()

    # Another site: the keyed API of the stack, by another host name.
    browser.get(f"http://localhost:{stack['port']}/health")
    outcome = browser.execute_async_script(_FETCH_FORM, f"{open_api}/v1/code/index", b64)
    assert outcome == "no-cors 0", outcome  # sent; its answer is opaque to the page
    assert "victim" not in repositories(open_api)

    browser.get(f"{open_api}/health")
    outcome = browser.execute_async_script(_FETCH_FORM, f"{open_api}/v1/code/index", b64)
    assert outcome == "same-origin 202", outcome
    assert "victim" in repositories(open_api)


def test_a_rebound_name_reads_nothing(open_api: str, browser: Any) -> None:
    """DNS rebinding's end state: the attacker's name resolves to 127.0.0.1, so the browser
    takes the API for the page's own origin. The API refuses the name itself."""
    port = open_api.rsplit(":", 1)[1]
    browser.get(f"http://{REBOUND}:{port}/health")
    assert "MNEMO_ALLOWED_HOSTS" in browser.find_element("tag name", "body").text
    read = browser.execute_async_script(
        "fetch('/v1/code/repositories').then(r => r.text()).then(arguments[0])"
    )
    assert "does not answer to the host name 'rebind.test'" in read, read
    browser.get(f"{open_api}/v1/code/repositories")  # by its address: served
    assert '"repositories"' in browser.find_element("tag name", "body").text
