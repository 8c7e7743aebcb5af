"""``make bench``: start a local stack in a temporary directory, measure every figure against
a baseline taken in the same run, print a table, write ``bench/results/latest.json`` (and a
dated copy).

    python -m bench.run                 # the whole suite (about a quarter of an hour)
    python -m bench.run --quick         # tiny sizes and the hashing model: a smoke run
    python -m bench.run --sections ingest,search --keep
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.mnemobench import embed, indexer, ingest, report, search
from bench.mnemobench.context import REPO, Config, Context
from bench.mnemobench.stack import Stack
from mnemo_core.settings import Settings

SECTIONS = {
    "embed": embed.run,
    "scaling": embed.run_scaling,
    "ingest": ingest.run,
    "search": search.run,
    "indexer": indexer.run,
}
MB = 1024 * 1024


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def meta(cfg: Config) -> dict[str, Any]:
    s = Settings()
    return {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "cpu_count": os.cpu_count(),
        "load_avg_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "quick": cfg.quick,
        "config": cfg.to_json(),
        "service_settings": {
            k: getattr(s, k)
            for k in (
                "batch_size",
                "message_batch",
                "search_ef",
                "parse_processes",
                "index_messages",
                "db_pool_max",
                "visibility_timeout_s",
            )
        },
        "postgres": "embedded PostgreSQL 18 (durable: fsync and synchronous_commit on)",
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, hashing model (seconds)")
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {', '.join(SECTIONS)}",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results",
        help="where latest.json and the dated copy go",
    )
    p.add_argument("--keep", action="store_true", help="keep the run directory (data, logs)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = Config.quick_run() if args.quick else Config.full()
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}")
    stack = Stack(model=cfg.model, keep=args.keep)
    results: dict[str, Any] = {"meta": meta(cfg)}
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    work = stack.root / "work"
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(cfg, stack, work)
    try:
        await asyncio.to_thread(stack.start)
        for name in wanted:
            t = time.perf_counter()
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            try:
                results.update(await SECTIONS[name](ctx))
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            timings[name] = round(time.perf_counter() - t, 1)
            print(f"bench: {name} done in {timings[name]}s", file=sys.stderr, flush=True)
    finally:
        stack.monitor.sample()
        stack.close()
    peaks = stack.monitor.peaks
    results["memory"] = {
        "api_peak_rss_mb": peaks.get("api", 0) / MB or None,
        "embedder_peak_rss_mb": peaks.get("embedder", 0) / MB or None,
        "indexer_peak_rss_mb": peaks.get("indexer", 0) / MB or None,
        "counting": "peak over the run, sampled every 0.25 s with psutil: RSS of each service "
        "process, for the indexer plus all its descendants (its pebble forkserver and parser "
        "processes, shared pages counted in each); the largest instance of each kind",
    }
    results["meta"]["load_avg_end"] = os.getloadavg()
    results["meta"]["section_seconds"] = timings
    results["meta"]["run_dir"] = str(stack.root) if args.keep else None
    if errors:
        results["errors"] = errors
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = asyncio.run(run(args))
    path = report.write(results, args.out)
    report.table(results)
    print(f"wrote {path}")
    if results.get("errors"):
        for name, err in results["errors"].items():
            print(f"section {name} failed: {err}", file=sys.stderr)
        return 2
    if args.strict and any(v["pass"] is False for v in report.verdicts(results)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
