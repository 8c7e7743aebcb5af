"""What the benchmarks feed the system: short notes an agent would keep, code chunks from
the Python standard library (code no one here wrote), and search vectors drawn from the
model's own distribution. Everything is seeded: two runs measure the same work."""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

import numpy as np

from mnemo_core.text import chunk_embed_text

STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Test suites are left out: they are fixtures more than code (and half of the stdlib).
TEST_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})

PEOPLE = ["Alice", "Bob", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Julia"]
PLACES = [
    "the kitchen drawer",
    "the blue flowerpot",
    "the office safe",
    "the garage shelf",
    "the car glovebox",
    "the hallway cabinet",
    "the backpack",
    "the top desk drawer",
]
THINGS = [
    "spare key",
    "passport",
    "charger",
    "warranty card",
    "tax papers",
    "bike lock",
    "router password",
    "insurance letter",
    "vaccination record",
    "spare glasses",
]
TOPICS = [
    "the Q3 roadmap",
    "database migrations",
    "the hiring plan",
    "on-call rotation",
    "the search latency regression",
    "pricing for the pro tier",
    "the vendor contract",
    "customer churn",
    "the mobile release",
    "GDPR data requests",
    "the office move",
]
TOOLS = [
    "PostgreSQL",
    "Redis",
    "Kubernetes",
    "the CI pipeline",
    "nginx",
    "the billing service",
    "the auth proxy",
    "Terraform",
    "the message queue",
    "the embedding worker",
]
ERRORS = [
    "connection refused",
    "timeout after 30s",
    "out of memory",
    "permission denied",
    "disk full",
    "certificate expired",
    "deadlock detected",
    "429 too many requests",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "next week", "tomorrow"]
FOODS = ["oat milk", "dark chocolate", "spicy ramen", "green tea", "sourdough", "blueberries"]

TEMPLATES = [
    "the {thing} is in {place}",
    "remember: {person} prefers {food} and hates early meetings",
    "meeting with {person} about {topic} moved to {day}",
    "{tool} failed with {error}; restarting it fixed the problem for now",
    "user asked to be reminded about {topic} on {day}",
    "{person} owns {tool}; ask them before changing its configuration",
    "call {person} back about {topic}",
    "buy {food} and a new {thing} case",
    "decided to postpone {topic} until the {tool} upgrade is done",
    "incident: {tool} returned {error} for about ten minutes; root cause still unknown",
    "{person} said the {thing} might be in {place}, check before {day}",
    "note to self: {topic} needs a written proposal before {day}",
    "the user likes short answers and code examples when talking about {tool}",
    "{person} and {person2} disagree on {topic}; schedule a call for {day}",
    "password rotation for {tool} is due {day}",
]
LONG_TAIL = [
    "Summary of the discussion with {person} on {day}: we went through {topic} in detail. "
    "The main risk is that {tool} keeps failing with {error} under load, which blocks the "
    "rollout. {person2} will prototype a fix, and we agreed to revisit {topic2} once the "
    "numbers are in. Action items: update the runbook, add an alert, and check whether the "
    "{thing} in {place} is still needed for the audit.",
    "Long note about {topic}: the user explained that their team moved from {tool} to "
    "{tool2} last quarter, and that most of the pain came from {error} errors during peak "
    "hours. They want weekly summaries, prefer {food} at offsites, and asked that {person} "
    "be copied on anything related to {topic2}.",
]


def _fill(rng: random.Random, template: str) -> str:
    p1, p2 = rng.sample(PEOPLE, 2)
    t1, t2 = rng.sample(TOPICS, 2)
    o1, o2 = rng.sample(TOOLS, 2)
    return template.format(
        person=p1,
        person2=p2,
        place=rng.choice(PLACES),
        thing=rng.choice(THINGS),
        topic=t1,
        topic2=t2,
        tool=o1,
        tool2=o2,
        error=rng.choice(ERRORS),
        day=rng.choice(DAYS),
        food=rng.choice(FOODS),
    )


def notes(n: int, seed: int = 1) -> list[str]:
    """Short notes (a tenth of them a paragraph long), each one unique."""
    rng = random.Random(seed)  # noqa: S311  # seeded sampling, not secrets
    out = []
    for i in range(n):
        template = rng.choice(LONG_TAIL) if rng.random() < 0.1 else rng.choice(TEMPLATES)
        out.append(f"{_fill(rng, template)} (#{i})")
    return out


def paragraphs(n: int, chars: int = 700, seed: int = 8) -> list[str]:
    """``n`` unique notes of about ``chars`` characters each (long-form notes run together)."""
    rng = random.Random(seed)  # noqa: S311  # seeded sampling, not secrets
    out = []
    for i in range(n):
        text = f"(#{i})"
        while len(text) < chars:
            text += " " + _fill(rng, rng.choice(LONG_TAIL))
        out.append(text[:chars])
    return out


def queries(n: int, seed: int = 2) -> list[str]:
    rng = random.Random(seed)  # noqa: S311  # seeded sampling, not secrets
    forms = [
        "where is the {thing}",
        "what did {person} say about {topic}",
        "problems with {tool}",
        "what does {person} like to eat",
        "{error} in {tool}",
        "when is the meeting about {topic}",
    ]
    return [_fill(rng, rng.choice(forms)) for _ in range(n)]


def stdlib_files(packages: list[str] | None = None) -> list[str]:
    """Relative paths of the standard library's ``.py`` files (without test suites), all of
    it or only the given packages; sorted."""
    roots = [STDLIB / p for p in packages] if packages else [STDLIB]
    out = []
    for root in roots:
        for f in sorted(root.rglob("*.py")):
            rel = f.relative_to(STDLIB)
            if any(part in TEST_DIRS or part.startswith("test_") for part in rel.parts):
                continue
            out.append(rel.as_posix())
    return out


CODE_PACKAGES = ["asyncio", "logging", "http", "urllib", "concurrent", "importlib", "xml"]


def code_chunks(n: int, seed: int = 3, packages: list[str] | None = None) -> list[str]:
    """``n`` chunk texts (what the embedder reads for code) sampled from stdlib packages."""
    from mnemo_indexer.chunking import ParseError, parse_file

    texts = []
    for rel in stdlib_files(packages or CODE_PACKAGES):
        try:
            parsed = parse_file(rel, (STDLIB / rel).read_text(encoding="utf-8"), None)
        except (ParseError, UnicodeDecodeError):
            continue
        texts += [
            chunk_embed_text(c.qualified_name, c.signature, c.docstring, c.content)
            for c in parsed.chunks
        ]
    rng = random.Random(seed)  # noqa: S311  # seeded sampling, not secrets
    return rng.sample(texts, min(n, len(texts)))


def mixed_corpus(n_notes: int, n_code: int, seed: int = 4) -> list[str]:
    texts = notes(n_notes) + code_chunks(n_code)
    random.Random(seed).shuffle(texts)  # noqa: S311  # seeded, not secrets
    return texts


def synthesize(base: np.ndarray, n: int, seed: int = 5, noise: float = 0.35) -> np.ndarray:
    """``n`` unit vectors from the model's distribution: each mixes two real vectors (mostly
    one of them) and adds isotropic noise of norm about ``noise``, then is normalized."""
    rng = np.random.default_rng(seed)
    d = base.shape[1]
    i = rng.integers(0, len(base), n)
    j = rng.integers(0, len(base), n)
    a = rng.uniform(0.55, 1.0, (n, 1)).astype(np.float32)
    out = a * base[i] + (1 - a) * base[j]
    out += rng.standard_normal((n, d)).astype(np.float32) * (noise / np.sqrt(d))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)
