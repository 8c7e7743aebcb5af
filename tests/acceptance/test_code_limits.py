"""The API's memory at the biggest archive it accepts, measured on a real mnemo-api process:
uploads expanding to MNEMO_MAX_ARCHIVE_EXPANDED_BYTES (the default), RSS sampled with psutil
while they are unpacked and stored. The API container's memory limit (docker-compose.yml,
deploy/.env.example) must hold the peak with headroom. Also: a JSON body gets the body limit,
not the archive limit. Figures in tests/artifacts/api_memory.json."""

from __future__ import annotations

import io
import json
import re
import sysconfig
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from mnemo_core.localpg import free_port
from mnemo_core.settings import Settings
from tests.helpers import Proc, service_env, wait_ready

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
#: Part of the container's memory limit the API may reach at the archive limit.
HEADROOM = 0.75


def compose_api_memory() -> int:
    """The api service's memory limit in bytes: its default in docker-compose.yml, which
    deploy/.env.example must repeat."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    raw = compose["services"]["api"]["deploy"]["resources"]["limits"]["memory"]
    match = re.fullmatch(r"\$\{API_MEMORY:-(\d+)m\}", raw)
    assert match, raw
    example = (ROOT / "deploy" / ".env.example").read_text()
    assert f"API_MEMORY={match.group(1)}m" in example.splitlines()
    return int(match.group(1)) * MIB


def source_files(budget: int) -> Iterator[tuple[str, bytes]]:
    """Real source text (the standard library, cycled) filling a tar stream of ``budget``
    bytes: each entry costs its data, a 512-byte header and at most 511 bytes of padding."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = [p.read_bytes() for p in sorted(stdlib.rglob("*.py"))[:3000]]
    sources = [s for s in sources if 0 < len(s) < 200_000]
    used, i = 10_240, 0  # the end-of-archive blocks
    while used + 2048 < budget:
        data = (sources[i % len(sources)] + f"\n# copy {i}\n".encode())[: budget - used - 1024]
        yield f"src/pkg{i // 500}/m{i}.py", data
        used += len(data) + 1024
        i += 1


def archive(budget: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for path, data in source_files(budget):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class PeakRss:
    """Samples a process's resident memory every few milliseconds in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def api(module_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Proc]]:
    port = free_port()
    env = service_env(MNEMO_DATABASE_URL=module_dsn, MNEMO_API_PORT=str(port))
    proc = Proc("api", ["mnemo-api"], env, tmp_path_factory.mktemp("limits-logs")).start()
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    yield url, proc
    proc.stop()


def upload(url: str, repository: str, data: bytes) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/code/index",
        data={"repository": repository},
        files={"archive": (f"{repository}.tgz", data, "application/gzip")},
        timeout=600,
    )


def test_api_memory_at_the_archive_limit(api: tuple[str, Proc], artifacts: Path) -> None:
    url, proc = api
    settings = Settings()
    expanded = settings.max_archive_expanded_bytes  # the default, as deployed
    limit = compose_api_memory()
    data = archive(expanded)
    assert len(data) <= settings.max_archive_bytes

    with PeakRss(proc.pid) as one:
        started = time.monotonic()
        r = upload(url, "big", data)
        seconds = time.monotonic() - started
    assert r.status_code == 202, r.text
    files = r.json()["files"]
    assert files > 10_000 and r.json()["files_changed"] == files

    # Two at once: the second waits for the first (one archive at a time per process).
    with PeakRss(proc.pid) as two, ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda name: upload(url, name, data), ["big2", "big3"]))
    assert [a.status_code for a in answers] == [202, 202]
    # Just over the limit: refused as a bomb, nothing written.
    with PeakRss(proc.pid) as over:
        r = upload(url, "over", archive(expanded + 4 * MIB))
    assert r.status_code == 413 and "MNEMO_MAX_ARCHIVE_EXPANDED_BYTES" in r.json()["detail"]
    repos = httpx.get(f"{url}/v1/code/repositories").json()["repositories"]
    assert [x["name"] for x in repos] == ["big", "big2", "big3"]

    report = {
        "expanded_limit_mib": expanded // MIB,
        "archive_mib": round(len(data) / MIB, 1),
        "files": files,
        "upload_s": round(seconds, 1),
        "rss_before_mib": round(one.base / MIB, 1),
        "rss_peak_mib": round(one.peak / MIB, 1),
        "rss_peak_two_uploads_at_once_mib": round(two.peak / MIB, 1),
        "rss_peak_refused_bomb_mib": round(over.peak / MIB, 1),
        "container_limit_mib": limit // MIB,
    }
    (artifacts / "api_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    for peak in (one.peak, two.peak, over.peak):
        assert peak < HEADROOM * limit, report


def test_json_bodies_get_the_body_limit_not_the_archive_limit(api: tuple[str, Proc]) -> None:
    url, _ = api
    body_limit = Settings().max_body_bytes
    content = "x = 1\n" * (body_limit // 6 + 1)
    r = httpx.post(
        f"{url}/v1/code/index",
        json={"repository": "j", "files": [{"path": "a.py", "content": content}]},
        timeout=60,
    )
    assert r.status_code == 413, r.text
    assert "MNEMO_MAX_BODY_BYTES" in r.json()["detail"]
    # The same bytes as an archive are within the archive limit.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(9):
            info = tarfile.TarInfo(f"m{i}.py")
            info.size = len(content.encode()) // 9
            tar.addfile(info, io.BytesIO(content.encode()[: info.size]))
    assert len(buf.getvalue()) > body_limit
    assert upload(url, "j", buf.getvalue()).status_code == 202
