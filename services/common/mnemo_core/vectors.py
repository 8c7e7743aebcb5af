"""Vectors over NOTIFY: float32 little-endian bytes, base64 (8000-byte payload limit)."""

from __future__ import annotations

import base64

import numpy as np


def encode(vec: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode("ascii")


def decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").copy()
