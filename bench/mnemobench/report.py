"""Targets, the printed table and the JSON files."""

from __future__ import annotations

import datetime as dt
import json
import operator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# (section, key, comparison, target): the numbers we hold ourselves to.
TARGETS: list[tuple[str, str, str, float]] = [
    ("embed_pipeline", "ratio", ">=", 0.90),
    ("scaling", "two_workers_speedup", ">=", 1.8),
    ("ingest", "ratio", ">=", 0.5),
    ("ingest", "batch_events_per_s", ">=", 10_000),
    ("search", "n_events", ">=", 100_000),
    ("search", "p95_ms", "<=", 15),
    ("search", "recall_at_10", ">=", 0.95),
    ("search", "text_p95_ms", "<=", 40),
    # "low added latency even while a large batch is being embedded" (the spine issue)
    ("search", "text_p95_ms_during_ingest", "<=", 100),
    ("indexer", "files_per_s", ">=", 200),
    ("indexer", "e2e_ratio", ">=", 0.85),
    ("memory", "api_peak_rss_mb", "<=", 150),
]
OPS = {">=": operator.ge, "<=": operator.le}

# Figures shown beside the targets: the baselines and the context of each ratio.
SHOWN: dict[str, list[str]] = {
    "embed_pipeline": ["raw_texts_per_s", "e2e_texts_per_s"],
    "scaling": [
        "one_worker_per_s",
        "two_workers_per_s",
        "one_worker_two_threads_per_s",
        "raw_two_processes_speedup",
        "raw_beside_other_ratio",
    ],
    "ingest": ["raw_per_s", "api_per_s"],
    "search": [
        "p50_ms",
        "p99_ms",
        "text_p50_ms",
        "text_p99_ms",
        "text_p50_ms_during_ingest",
        "ingest_seconds_during",
    ],
    "indexer": [
        "chunks_per_s",
        "raw_files_per_s",
        "raw_build_files_per_s",
        "e2e_seconds",
        "e2e_raw_encode_seconds",
    ],
    "memory": ["embedder_peak_rss_mb", "indexer_peak_rss_mb"],
}


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for section, key, op, target in TARGETS:
        value = results.get(section, {}).get(key)
        ok = None if value is None else bool(OPS[op](value, target))
        out.append(
            {"section": section, "key": key, "op": op, "target": target, "value": value, "pass": ok}
        )
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else str(v)


def table(results: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    quick = results.get("meta", {}).get("quick")
    t = Table(
        title="MnemoLite benchmarks" + (" (quick: sizes too small to judge)" if quick else "")
    )
    for col in ("section", "figure", "value", "target", "result"):
        t.add_column(col, justify="right" if col in ("value", "target") else "left")
    judged = {(v["section"], v["key"]): v for v in verdicts(results)}
    sections = list(dict.fromkeys([s for s, *_ in TARGETS] + list(SHOWN)))
    for section in sections:
        if section not in results:
            continue
        keys = [k for s, k, *_ in TARGETS if s == section] + SHOWN.get(section, [])
        for key in keys:
            v = judged.get((section, key))
            value = results[section].get(key)
            if v is None:
                t.add_row(section, key, _fmt(value), "", "")
                continue
            mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "-"}[v["pass"]]
            t.add_row(section, key, _fmt(value), f"{v['op']} {_fmt(v['target'])}", mark)
    console.print(t)


def write(results: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {**results, "targets": verdicts(results)}
    text = json.dumps(results, indent=2, default=str) + "\n"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (out_dir / f"{stamp}.json").write_text(text)
    latest = out_dir / "latest.json"
    latest.write_text(text)
    return latest
