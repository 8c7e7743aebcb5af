"""Baselines, each run in a process of its own, like the service it is compared with.

    python -m bench.mnemobench.baselines SPEC.json     # prints one JSON object

- ``encode``: the embedder's model (same name, batch size and torch threads, loaded the way
  ``mnemo-embedder`` loads it) calling ``encode`` once on every text; one warm-up batch first.
  With ``start_flag``, several such processes (each on its share of the texts) load and warm
  up, then start together when the parent creates that file.
- ``parse``: the indexer's chunker in one process: ``parse_file`` over every file, then the
  same again with the rows the parser processes build (``parse_and_build``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def encode(spec: dict[str, Any]) -> dict[str, Any]:
    from mnemo_embedder import model as models

    with open(spec["texts"]) as f:
        texts: list[str] = json.load(f)
    model = models.load(
        spec["model"], dim=spec["dim"], batch_size=spec["batch_size"], threads=spec["threads"]
    )
    model.encode(texts[: spec["batch_size"]])  # warm-up: torch's first call allocates
    if spec.get("start_flag"):
        # Run beside other baselines: say so, and start together when the flag appears.
        Path(f"{spec['start_flag']}.ready.{os.getpid()}").touch()
        while not os.path.exists(spec["start_flag"]):
            time.sleep(0.005)
    started = time.time()
    best = float("inf")
    for _ in range(int(spec.get("repeat", 1))):
        t = time.perf_counter()
        vecs = model.encode(texts)
        best = min(best, time.perf_counter() - t)
    ended = time.time()
    assert len(vecs) == len(texts)
    if spec.get("save"):
        import numpy as np

        np.save(spec["save"], np.asarray(vecs, dtype=np.float32))
    return {
        "n": len(texts),
        "seconds": best,
        "texts_per_s": len(texts) / best,
        "started": started,
        "ended": ended,
    }


def parse(spec: dict[str, Any]) -> dict[str, Any]:
    from mnemo_indexer.chunking import ParseError, parse_file
    from mnemo_indexer.pool import parse_and_build

    root = Path(spec["root"])
    files = [(p, (root / p).read_text(encoding="utf-8")) for p in spec["files"]]
    out: dict[str, Any] = {"files": len(files)}
    for path, content in files[:20]:  # warm-up: grammars load on first use
        try:
            parse_file(path, content, None)
        except ParseError:
            pass
    for label, fn in (("parse", parse_file), ("build", parse_and_build)):
        chunks = failed = 0
        t = time.perf_counter()
        for path, content in files:
            try:
                r = fn(path, content, None)
            except ParseError:
                failed += 1
                continue
            chunks += len(r.chunks)
        dt = time.perf_counter() - t
        out[label] = {
            "seconds": dt,
            "chunks": chunks,
            "failed": failed,
            "files_per_s": len(files) / dt,
            "chunks_per_s": chunks / dt,
        }
    return out


MODES = {"encode": encode, "parse": parse}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    with open(args[0]) as f:
        spec = json.load(f)
    out = MODES[spec["mode"]](spec)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
