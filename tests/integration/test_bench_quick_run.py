"""`make bench` keeps working: the whole harness runs end to end at tiny sizes (``--quick``:
the hashing model, a few hundred texts, 2,000 search events, the stdlib's json package) and
writes every section and key. The figures themselves are not judged here: benchmarks are not
tests, and these sizes are too small to mean anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance

REPO = Path(__file__).resolve().parents[2]

REQUIRED = {
    "embed_pipeline": ["raw_texts_per_s", "e2e_texts_per_s", "ratio"],
    "scaling": [
        "one_worker_per_s",
        "two_workers_per_s",
        "two_workers_speedup",
        "raw_two_processes_speedup",
    ],
    "ingest": ["raw_per_s", "api_per_s", "ratio", "batch_events_per_s"],
    "search": [
        "n_events",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "text_p95_ms",
        "text_p95_ms_during_ingest",
        "recall_at_10",
    ],
    "indexer": ["files_per_s", "chunks_per_s", "e2e_ratio"],
    "memory": ["api_peak_rss_mb", "embedder_peak_rss_mb", "indexer_peak_rss_mb"],
}


def test_quick_bench_writes_every_section(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "MnemoLite benchmarks" in out.stdout
    data = json.loads((tmp_path / "latest.json").read_text())
    assert "errors" not in data
    for section, keys in REQUIRED.items():
        for key in keys:
            value = data[section][key]
            assert isinstance(value, int | float) and value > 0, (section, key, value)
    meta = data["meta"]
    assert meta["quick"] is True and meta["cpu_count"] >= 1 and meta["git_commit"]
    assert {t["section"] for t in data["targets"]} >= set(REQUIRED)
    # latest.json and its dated copy
    assert len(list(tmp_path.glob("*.json"))) == 2
