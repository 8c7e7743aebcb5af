"""The index worker in-process against the real database: parse, chunk, graph, embed,
incremental re-index, prune, delete."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import numpy as np
import pytest

from mnemo_core import code, jobs
from mnemo_core import graph as graphs
from mnemo_core.settings import Settings
from mnemo_embedder.model import HashModel
from mnemo_embedder.worker import EmbedWorker
from mnemo_indexer.pool import FileRows, ParsePool
from mnemo_indexer.worker import IndexWorker

MODEL = "hash-384"

FILES = {
    "shop/__init__.py": "",
    "shop/pricing.py": '''"""Prices."""

def apply_discount(price, pct):
    """Lower a price by a percentage."""
    return round(price * (1 - pct / 100), 2)


def total(items):
    return sum(apply_discount(i.price, i.pct) for i in items)
''',
    "shop/cart.py": """from shop.pricing import total


class Cart:
    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)
        return self.count()

    def count(self):
        return len(self.items)

    def checkout(self):
        return total(self.items)
""",
    "web/app.js": """import { format } from "./fmt";

export function render(cart) {
  return format(cart.total());
}
""",
    "web/fmt.js": """export function format(n) {
  return `$${n.toFixed(2)}`;
}
""",
    "README.md": "# Shop\n\nA tiny shop.\n\n## Pricing\n\nDiscounts apply per item.\n",
}


def settings(**kw: object) -> Settings:
    base: dict[str, object] = {"embedding_model": MODEL, "parse_timeout_s": 20, "max_attempts": 2}
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def parser() -> ParsePool:
    p = ParsePool(1, 20)
    yield p
    p.close()


async def submit(
    pool: asyncpg.Pool,
    files: dict[str, str],
    prune: bool = False,
    languages: dict[str, str] | None = None,
) -> code.IndexAccepted:
    hints = languages or {}
    async with pool.acquire() as conn, conn.transaction():
        return await code.index_files(
            conn,
            "shop",
            [code.SourceFile.of_text(p, c, hints.get(p)) for p, c in files.items()],
            commit=None,
            prune=prune,
        )


async def drain(pool: asyncpg.Pool, parser: ParsePool) -> None:
    s = settings()
    idx = IndexWorker(pool, s, parser, worker_id=f"i-{uuid.uuid4().hex[:6]}", once=True)
    await asyncio.wait_for(idx.run(), 60)
    emb = EmbedWorker(pool, HashModel(384), s, worker_id=f"e-{uuid.uuid4().hex[:6]}", once=True)
    await asyncio.wait_for(emb.run(), 60)


async def job_of(pool: asyncpg.Pool, job_id: uuid.UUID) -> dict:
    async with pool.acquire() as conn:
        return await jobs.get(conn, job_id)


async def test_index_graph_reindex_prune_delete(pool: asyncpg.Pool, parser: ParsePool) -> None:
    first = await submit(pool, FILES)
    assert first.changed == len(FILES) and first.unchanged == 0
    await drain(pool, parser)
    job = await job_of(pool, first.job_id)
    assert job["status"] == "succeeded", job
    res = job["result"]
    assert res["files_indexed"] == len(FILES) and res["files_failed"] == []
    assert res["chunks"] > 8 and res["symbols"] >= 8 and res["edges"] > 5
    async with pool.acquire() as conn:
        n_chunks = await conn.fetchval("SELECT count(*) FROM code_chunks")
        assert (
            await conn.fetchval("SELECT count(*) FROM code_chunks WHERE embedding_status = 'done'")
            == n_chunks
        )
        detail = await code.job_detail(conn, first.job_id)
        assert detail["files"] == {"parsed": len(FILES), "failed": 0, "total": len(FILES)}
        assert detail["chunks"]["embedded"] == detail["chunks"]["total"] == n_chunks

        sym = await graphs.symbol(conn, "shop", "shop.pricing.apply_discount")
        assert [c["qualified_name"] for c in sym["callers"]] == ["shop.pricing.total"]
        sym = await graphs.symbol(conn, "shop", "shop.cart.Cart.checkout")
        callees = {c["qualified_name"]: c for c in sym["callees"]}
        assert callees["shop.pricing.total"]["resolved"] is True
        assert callees["shop.pricing.total"]["path"] == "shop/pricing.py"
        sym = await graphs.symbol(conn, "shop", "shop.cart.Cart.add")
        assert {c["qualified_name"] for c in sym["callees"]} >= {"shop.cart.Cart.count"}
        sym = await graphs.symbol(conn, "shop", "web.app.render")
        assert "web.fmt.format" in {c["qualified_name"] for c in sym["callees"]}

        path = await graphs.call_path(
            conn, "shop", "shop.cart.Cart.checkout", "shop.pricing.apply_discount", max_depth=5
        )
        assert [p["qualified_name"] for p in path] == [
            "shop.cart.Cart.checkout",
            "shop.pricing.total",
            "shop.pricing.apply_discount",
        ]
        walk = await graphs.traverse(
            conn,
            "shop",
            "shop.pricing.apply_discount",
            direction="in",
            relationship="calls",
            max_depth=3,
        )
        assert {n["qualified_name"]: n["depth"] for n in walk["nodes"]} == {
            "shop.pricing.total": 1,
            "shop.cart.Cart.checkout": 2,
        }
        repos = await code.list_repositories(conn)
        assert repos[0]["name"] == "shop" and repos[0]["embedding_coverage"] == 1.0
        assert repos[0]["languages"] == {"python": 3, "javascript": 2, "markdown": 1}

    # Unchanged: nothing queued, nothing parsed, nothing embedded.
    again = await submit(pool, FILES)
    assert again.unchanged == len(FILES) and again.changed == 0
    assert (await job_of(pool, again.job_id))["status"] == "succeeded"

    # One file changes: only it is re-parsed; its old chunks are gone; unchanged chunks of
    # it keep their vectors.
    changed = dict(FILES)
    changed["shop/pricing.py"] = FILES["shop/pricing.py"].replace(
        "def total(items):", "def grand_total(items):"
    )
    async with pool.acquire() as conn:
        before = {
            r["qualified_name"]: r["id"]
            for r in await conn.fetch(
                "SELECT id, qualified_name FROM code_chunks WHERE path = 'shop/pricing.py'"
            )
        }
    third = await submit(pool, changed)
    assert third.changed == 1 and third.unchanged == len(FILES) - 1
    await drain(pool, parser)
    job = await job_of(pool, third.job_id)
    assert job["status"] == "succeeded" and job["result"]["files_indexed"] == 1
    async with pool.acquire() as conn:
        after = {
            r["qualified_name"]: r
            for r in await conn.fetch(
                "SELECT id, qualified_name, embedding_status FROM code_chunks"
                " WHERE path = 'shop/pricing.py'"
            )
        }
        assert "shop.pricing.total" not in after and "shop.pricing.grand_total" in after
        assert set(before) - set(after) == {"shop.pricing.total"}
        assert all(r["embedding_status"] == "done" for r in after.values())
        # Calls into the renamed function from an unchanged file no longer resolve to it.
        sym = await graphs.symbol(conn, "shop", "shop.cart.Cart.checkout")
        assert "shop.pricing.total" not in {
            c["qualified_name"] for c in sym["callees"] if c["resolved"]
        }

    # Prune: files not in the request go.
    pruned = await submit(
        pool, {k: v for k, v in changed.items() if not k.startswith("web/")}, prune=True
    )
    assert pruned.removed == 2
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM code_files WHERE path LIKE 'web/%'") == 0
    waiting = await submit(pool, {"shop/late.py": "def late():\n    return 1\n"})
    async with pool.acquire() as conn:
        await code.delete_repository(conn, "shop")
        for table in ("code_files", "code_chunks", "code_edges", "code_repositories"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
    # A job with work left ends cancelled, saying why; finished jobs stay as they were.
    job = await job_of(pool, waiting.job_id)
    assert job["status"] == "cancelled" and job["error"] == "repository 'shop' was deleted"
    assert job["progress"]["done"] + job["progress"]["failed"] == job["progress"]["total"]
    assert (await job_of(pool, third.job_id))["status"] == "succeeded"


async def test_bad_files_fail_alone(pool: asyncpg.Pool, parser: ParsePool) -> None:
    from mnemo_core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="NUL"):
        await submit(pool, {"nul.py": "a = 1\x00\n"})
    files = {
        "ok.py": "def fine():\n    return 1\n",
        "semver/range.bnf": "range-set ::= range ( logical-or range ) *\n",
        "old.cob": "IDENTIFICATION DIVISION.\n",
        "deep.py": "x = " + "(" * 3000,
    }
    # A language hint the parser does not know (the API refuses it; an older row may hold
    # one): that file fails alone, with a reason that names the problem once.
    acc = await submit(pool, files, languages={"old.cob": "cobol"})
    await drain(pool, parser)
    job = await job_of(pool, acc.job_id)
    assert job["status"] == "failed"
    failed = {f["path"]: f["reason"] for f in job["result"]["files_failed"]}
    assert set(failed) == {"old.cob"}
    assert failed["old.cob"].startswith("unsupported language 'cobol'")
    assert "old.cob" not in failed["old.cob"]
    assert job["error"] == f"old.cob: {failed['old.cob']}"
    [item] = job["failures"]
    assert item["item_kind"] == "file" and item["error"].count("old.cob") == 1
    assert job["result"]["files_indexed"] == 3
    async with pool.acquire() as conn:
        kinds = await conn.fetch(
            "SELECT k.kind, f.language FROM code_chunks k JOIN code_files f ON f.id = k.file_id"
            " WHERE f.path = 'semver/range.bnf'"
        )
    assert [(r["kind"], r["language"]) for r in kinds] == [("window", "text")]


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.IdleInTransactionSessionTimeoutError("idle-in-transaction timeout"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_database_going_away_is_not_a_failure_of_the_message(
    pool: asyncpg.Pool, parser: ParsePool, error: Exception
) -> None:
    """The batch loop backs off and the message keeps its place: it was released with a
    delay as a failure (and dead-lettered at its last attempt)."""
    acc = await submit(pool, {"a.py": "def f():\n    return 1\n"})
    w = IndexWorker(pool, settings(max_attempts=1), parser, worker_id="i-away", once=True)
    [msg] = await w._read(0)
    before = await job_of(pool, acc.job_id)
    vt_sql = "SELECT vt FROM pgmq.q_index WHERE msg_id = $1"
    async with pool.acquire() as conn:
        vt = await conn.fetchval(vt_sql, msg.msg_id)

    async def going_away() -> Any:
        raise error

    with pytest.raises(type(error)):
        await w._process(msg, asyncio.ensure_future(going_away()))
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pgmq.q_index_dlq") == 0
        assert await conn.fetchval(vt_sql, msg.msg_id) == vt  # neither released nor put off
    assert (await job_of(pool, acc.job_id))["status"] == before["status"]


async def test_pathological_file_is_retried_then_dead_lettered(pool: asyncpg.Pool) -> None:
    """A file whose parse overruns the time bound fails alone: retried once with its message
    (not ``max_attempts`` times: each overrun costs the whole bound), then failed with its
    reason and the message dead-lettered; the other files succeed."""
    slow = ParsePool(1, 0.3)
    try:
        huge = "".join(f"def f{i}(a):\n    return g(a) + {i}\n" for i in range(60_000))
        acc = await submit(pool, {"big.py": huge, "small.py": "def ok():\n    return 1\n"})
        s = settings(max_attempts=5)
        for _ in range(2):
            w = IndexWorker(pool, s, slow, worker_id=f"i-{uuid.uuid4().hex[:6]}", once=True)
            await asyncio.wait_for(w.run(), 60)
            async with pool.acquire() as conn:  # skip the backoff
                await conn.execute("UPDATE pgmq.q_index SET vt = now()")
        emb = EmbedWorker(pool, HashModel(384), s, worker_id="e-slow", once=True)
        await asyncio.wait_for(emb.run(), 60)
        job = await job_of(pool, acc.job_id)
        assert job["status"] == "failed", job
        assert job["result"]["files_indexed"] == 1
        [failure] = job["result"]["files_failed"]
        assert failure["path"] == "big.py" and "longer than 0.3s" in failure["reason"]
        assert "after 2 attempts" in failure["reason"]
        async with pool.acquire() as conn:
            dead = await conn.fetch("SELECT message FROM pgmq.q_index_dlq")
            assert len(dead) == 1 and "big.py" in dead[0]["message"]["error"]
            assert await conn.fetchval("SELECT count(*) FROM pgmq.q_index") == 0
    finally:
        slow.close()


async def test_dead_lettered_file_replays_after_the_cause_is_fixed(
    pool: asyncpg.Pool, parser: ParsePool
) -> None:
    from mnemo_core import dlq

    slow = ParsePool(1, 0.05)
    try:
        big = "".join(f"def f{i}(a):\n    return g(a) + {i}\n" for i in range(8_000))
        acc = await submit(pool, {"big.py": big})
        s = settings(max_attempts=1)
        w = IndexWorker(pool, s, slow, worker_id="i-slow", once=True)
        await asyncio.wait_for(w.run(), 60)
    finally:
        slow.close()
    job = await job_of(pool, acc.job_id)
    assert job["status"] == "failed" and job["result"]["files_failed"]
    # The cause is fixed (a parser with a sane time bound); replay the dead letter.
    result = await dlq.replay(pool, "index_dlq")
    assert result.to_json()["replayed"] == 1 and result.requeued_items == 1
    job = await job_of(pool, acc.job_id)
    assert job["status"] == "queued" and job["result"]["files_failed"] == []
    await drain(pool, parser)
    job = await job_of(pool, acc.job_id)
    assert job["status"] == "succeeded", job
    assert job["progress"]["failed"] == 0 and job["result"]["files_indexed"] == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM code_chunks WHERE path = 'big.py'") > 0


async def test_retry_of_an_index_job_reparses_failed_files(
    pool: asyncpg.Pool, parser: ParsePool
) -> None:
    acc = await submit(
        pool, {"ok.py": "def a():\n    return 1\n", "odd.bin": "x"}, languages={"odd.bin": "x"}
    )
    await drain(pool, parser)
    job = await job_of(pool, acc.job_id)
    assert job["status"] == "failed"
    async with pool.acquire() as conn, conn.transaction():
        again = await jobs.retry(conn, acc.job_id, message_batch=8)
    assert again["requeued"] == 1 and again["result"]["files_failed"] == []
    await drain(pool, parser)
    job = await job_of(pool, acc.job_id)  # still unsupported: fails again, counted once
    assert job["status"] == "failed" and job["progress"]["failed"] == 1
    assert [f["path"] for f in job["result"]["files_failed"]] == ["odd.bin"]


async def test_minified_file_indexes_in_bounded_time(pool: asyncpg.Pool, parser: ParsePool) -> None:
    """A 200 KB single-line bundle: every chunk is cut at its unit, so what is stored (and
    embedded) stays linear in the file (the audit saw 69 KB become 207 MB of chunks)."""
    unit = "function a(){return 1};class K{m(){return this.n}static s(x){return x*2}};"
    text = unit * (200_000 // len(unit))
    acc = await submit(pool, {"dist/app.min.js": text})
    started = asyncio.get_running_loop().time()
    s = settings(parse_timeout_s=20)
    await asyncio.wait_for(
        IndexWorker(pool, s, parser, worker_id=f"i-{uuid.uuid4().hex[:6]}", once=True).run(), 60
    )
    parsed_in = asyncio.get_running_loop().time() - started
    job = await job_of(pool, acc.job_id)
    assert job["result"]["files_indexed"] == 1 and job["result"]["files_failed"] == [], job
    assert parsed_in < 20, parsed_in
    async with pool.acquire() as conn:
        n, stored, searched = await conn.fetchrow(
            "SELECT count(*), sum(length(content)), sum(length(tsv::text)) FROM code_chunks"
        )
    assert n > 10_000
    assert stored <= 2 * len(text), stored
    assert searched <= 10 * len(text), searched  # path, names and split identifiers on top


async def test_commonjs_default_export_call_lands_on_the_function(
    pool: asyncpg.Pool, parser: ParsePool
) -> None:
    files = {
        "semver/functions/compare.js": "const compare = (a, b) => (a > b) - (a < b)\n"
        "module.exports = compare\n",
        "semver/functions/gt.js": "const compare = require('./compare')\n"
        "const gt = (a, b) => compare(a, b) > 0\n"
        "module.exports = gt\n",
        "semver/functions/eq.js": "const cmp = require('./compare')\n"  # bound to another
        "const eq = (a, b) => cmp(a, b) === 0\n"  # name: not followed, stays unresolved
        "module.exports = eq\n",
    }
    await submit(pool, files)
    await drain(pool, parser)
    async with pool.acquire() as conn:
        sym = await graphs.symbol(conn, "shop", "semver.functions.gt.gt")
    [callee] = sym["callees"]
    assert (callee["qualified_name"], callee["resolved"]) == (
        "semver.functions.compare.compare",
        True,
    )
    assert callee["path"] == "semver/functions/compare.js" and callee["call_line"] == 2
    async with pool.acquire() as conn:
        other = await graphs.symbol(conn, "shop", "semver.functions.eq.eq")
    assert [(c["qualified_name"], c["resolved"]) for c in other["callees"]] == [("cmp", False)]


RESOLUTION_FILES = {
    # Python: a builtin named like a repository function stays external; aliases, nested
    # functions and re-exports resolve.
    "pkg/__init__.py": "from .core import helper\n",
    "pkg/core.py": "def helper():\n    return 1\n",
    "pkg/util.py": "def open(p):\n    return p\n\ndef fact(n):\n    return n\n",
    "pkg/main.py": "from pkg.util import fact as factorial\nfrom pkg import util as U\n"
    "from pkg import helper\n\n"
    "def main():\n    def inner():\n        return 2\n"
    "    open('/tmp/x')\n    factorial(3)\n    U.fact(1)\n    inner()\n    helper()\n",
    # Java: the same package needs no import.
    "src/main/java/com/ex/bank/Bank.java": "package com.ex.bank;\n"
    "public class Bank {\n  public void transfer() { Account.open(); }\n}\n",
    "src/main/java/com/ex/bank/Account.java": "package com.ex.bank;\n"
    "public class Account {\n  public static void open() {}\n}\n",
    # C#: a namespace brought in by `using`.
    "Core/Ledger.cs": "namespace Bank.Core {\n  public static class Helper {\n"
    "    public static void Log(int a) {}\n  }\n}\n",
    "App/Program.cs": "using Bank.Core;\nnamespace Bank.App {\n"
    "  class Program { static void Main() { Helper.Log(1); } }\n}\n",
    # PHP: $this.
    "src/UserRepo.php": "<?php\nnamespace App\\Repo;\nclass UserRepo {\n"
    "  function __construct() { $this->init(); }\n  function init() { return 1; }\n}\n",
    # Rust: self and Self inside an impl block, with another type's method of the same name.
    "src/geo.rs": "pub struct Point { x: f64 }\nimpl Point {\n"
    "  pub fn new() -> Self { Self::make() }\n  fn make() -> Point { Point { x: 0.0 } }\n"
    "  pub fn len(&self) -> f64 { self.sq() }\n  fn sq(&self) -> f64 { self.x }\n}\n"
    "struct Q;\nimpl Q {\n  fn sq(&self) -> f64 { 2.0 }\n}\n",
    # TypeScript: named, renamed and namespace imports.
    "web/shapes.ts": "export class Rect {\n  static square(n: number) { return n }\n}\n"
    "export function area(n: number) { return n }\n",
    "web/geo/index.ts": "export namespace Geo {\n  export function dist() { return 0 }\n}\n",
    "web/app.ts": "import { Rect, area as A } from './shapes'\nimport * as S from './geo'\n"
    "function main() { Rect.square(2); A(1); S.Geo.dist() }\n",
    # Go: calls through the method's receiver, whatever its name.
    "server/server.go": "package server\ntype Server struct{}\n"
    "func (srv *Server) Start() { srv.init() }\nfunc (s *Server) init() {}\n",
    # JavaScript: a module required by an index.js, called by its name.
    "lib/index.js": "const sort = require('./sort')\nfunction run(xs) { return sort(xs) }\n"
    "module.exports = run\n",
    "lib/sort.js": "function sort(xs) { return xs }\nmodule.exports = sort\n",
}


@pytest.mark.parametrize(
    ("caller", "callees"),
    [
        (
            "pkg.main.main",
            [
                ("open", False),  # the builtin, not pkg.util.open
                ("pkg.util.fact", True),  # factorial (an alias)
                ("pkg.util.fact", True),  # U.fact (a module's alias)
                ("pkg.main.main.inner", True),
                ("pkg.core.helper", True),  # re-exported by pkg/__init__.py
            ],
        ),
        ("com.ex.bank.Bank.transfer", [("com.ex.bank.Account.open", True)]),
        ("Bank.App.Program.Main", [("Bank.Core.Helper.Log", True)]),
        ("App.Repo.UserRepo.__construct", [("App.Repo.UserRepo.init", True)]),
        ("src.geo.Point.new", [("src.geo.Point.make", True)]),
        ("src.geo.Point.len", [("src.geo.Point.sq", True)]),
        ("lib.run", [("lib.sort.sort", True)]),
        ("server.server.Server.Start", [("server.server.Server.init", True)]),
        (
            "web.app.main",
            [
                ("web.shapes.Rect.square", True),
                ("web.shapes.area", True),
                ("web.geo.Geo.dist", True),
            ],
        ),
    ],
)
async def test_calls_resolve_as_each_language_scopes_names(
    pool: asyncpg.Pool, parser: ParsePool, caller: str, callees: list[tuple[str, bool]]
) -> None:
    await submit(pool, RESOLUTION_FILES)
    await drain(pool, parser)
    async with pool.acquire() as conn:
        sym = await graphs.symbol(conn, "shop", caller)
    got = sorted((c["qualified_name"], c["resolved"]) for c in sym["callees"])
    assert got == sorted(callees)


async def test_a_call_path_goes_through_a_constructor(
    pool: asyncpg.Pool, parser: ParsePool
) -> None:
    files = {
        "geo/shapes.py": "from geo.util import add\n\n\nclass Circle:\n"
        "    def __init__(self, r):\n        self.r = self.setup(r)\n\n"
        "    def setup(self, r):\n        return add(r, r)\n",
        "geo/util.py": "def add(a, b):\n    return a + b\n",
        "geo/main.py": "from geo.shapes import Circle\n\n\ndef main():\n    return Circle(2)\n",
    }
    await submit(pool, files)
    await drain(pool, parser)
    async with pool.acquire() as conn:
        chain = await graphs.call_path(conn, "shop", "geo.main.main", "geo.util.add", max_depth=6)
    assert chain is not None
    assert [c["qualified_name"] for c in chain] == [
        "geo.main.main",
        "geo.shapes.Circle",
        "geo.shapes.Circle.__init__",
        "geo.shapes.Circle.setup",
        "geo.util.add",
    ]


async def test_next_read_is_parsed_while_the_last_message_in_hand_is_written(
    pool: asyncpg.Pool, parser: ParsePool
) -> None:
    """With one message a read, the next message's files still go to the parser before
    the message in hand has been written: reading on does not wait for the end of a read."""
    files = {f"pkg/m{i}.py": f"def f{i}():\n    return {i}\n" for i in range(40)}  # 3 messages
    acc = await submit(pool, files)
    events: list[tuple[str, frozenset[str]]] = []

    class Recording:  # the shared parser, its calls recorded
        async def parse(self, path: str, content: str, language: str | None) -> FileRows:
            events.append(("parse", frozenset({path})))
            return await parser.parse(path, content, language)

    class Worker(IndexWorker):
        async def _write(self, msg, m, rows, out):  # type: ignore[no-untyped-def]
            counts = await super()._write(msg, m, rows, out)
            events.append(("written", frozenset(r["path"] for r in rows)))
            return counts

    recording: ParsePool = Recording()  # type: ignore[assignment]
    w = Worker(pool, settings(index_messages=1), recording, worker_id="i-ahead", once=True)
    await asyncio.wait_for(w.run(), 60)
    writes = [paths for kind, paths in events if kind == "written"]
    assert len(writes) == 3 and frozenset().union(*writes) == set(files)
    for k, paths in enumerate(writes[:-1]):
        before = events[: events.index(("written", paths))]
        assert any(kind == "parse" and p <= writes[k + 1] for kind, p in before), k
    job = await job_of(pool, acc.job_id)
    assert job["result"]["files_indexed"] == len(files)


async def test_warm_up_starts_every_parser_process_before_the_first_file() -> None:
    """pebble starts its processes on the first task; the indexer starts them (and parses
    one line) before it registers, so the first job does not wait for them."""
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    p = ParsePool(2, 20)
    try:
        assert {c.pid for c in me.children(recursive=True)} == before  # nothing started yet
        await p.warm_up()
        # Forked by the forkserver (which an earlier pool in this process may have started).
        parsers = [
            c for c in me.children(recursive=True) if c.pid not in before and c.ppid() != me.pid
        ]
        assert len(parsers) == 2
    finally:
        p.close()


async def test_an_upload_waits_for_an_indexer_that_holds_the_repository(
    pool: asyncpg.Pool,
) -> None:
    """The indexer locks the repository, then stamps its row; an upload of the same
    repository takes the lock before the row, so it waits instead of deadlocking."""
    from mnemo_core.queries import Q

    await submit(pool, {"a.py": "x = 1\n"})
    async with pool.acquire() as indexer, pool.acquire() as watcher:
        tx = indexer.transaction()
        await tx.start()
        await indexer.execute(Q["lock_repository"], "shop")
        upload = asyncio.ensure_future(submit(pool, {"b.py": "y = 2\n"}))
        deadline = asyncio.get_running_loop().time() + 10
        while not await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%pg_advisory_xact_lock%' AND pid <> pg_backend_pid()"
        ):
            assert asyncio.get_running_loop().time() < deadline, "the upload never waited"
            assert not upload.done(), upload
            await asyncio.sleep(0.02)
        await indexer.execute(Q["repository_indexed"], "shop")
        await tx.commit()
    acc = await asyncio.wait_for(upload, 10)
    assert acc.changed == 1


async def _lock_waiters(pool: asyncpg.Pool) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND datname = current_database()"
    )


async def test_a_prune_while_an_embedder_writes_the_chunks_it_removes(
    pool: asyncpg.Pool, parser: ParsePool
) -> None:
    """An embedder has written a vector of a chunk (its row locked) and is about to count it
    on its job, while an upload with ``prune`` deletes that chunk's file. The upload used to
    take the job's row first and then wait for the chunk: the embedder then waited for the
    job, PostgreSQL ended one of them as a deadlock, and the upload answered 500. It also
    counted the chunk as pending, so the job lost an item the embedder still counted done.
    Now the upload waits for the embedder, sees the chunk done, and the job adds up."""
    from mnemo_core.code import ChunkStore
    from mnemo_core.settings import Settings

    first = await submit(pool, FILES)
    idx = IndexWorker(pool, settings(), parser, worker_id="i-prune", once=True)
    await asyncio.wait_for(idx.run(), 60)
    chunk_ids = [
        str(r["id"])
        for r in await pool.fetch(
            "SELECT id FROM code_chunks WHERE path = 'shop/cart.py' AND job_id = $1 "
            "AND embedding_status = 'pending' ORDER BY id",
            first.job_id,
        )
    ]
    assert len(chunk_ids) > 1

    embedder = await pool.acquire()
    try:
        tx = embedder.transaction()
        await tx.start()
        moved = await ChunkStore().store(
            embedder, chunk_ids[:1], [np.full(384, 0.05, np.float32)], MODEL
        )
        assert len(moved.rows) == 1
        kept = {p: c for p, c in FILES.items() if p != "shop/cart.py"}
        upload = asyncio.ensure_future(submit(pool, kept, prune=True))  # no retry in here
        for _ in range(200):
            if await _lock_waiters(pool):
                break
            await asyncio.sleep(0.02)
        assert await _lock_waiters(pool) == 1, "the upload waits for the embedder's chunk"
        await jobs.progress(embedder, first.job_id, done=1, attempts=1)
        await tx.commit()
    finally:
        await pool.release(embedder)
    accepted = await asyncio.wait_for(upload, 30)
    assert accepted.removed == 1

    async def adds_up() -> tuple[dict, int]:
        job = await job_of(pool, first.job_id)
        pending = await pool.fetchval(
            "SELECT count(*) FROM code_chunks WHERE job_id = $1 AND embedding_status = 'pending'",
            first.job_id,
        )
        return job, pending

    job, pending = await adds_up()
    p = job["progress"]
    assert p["done"] + p["failed"] + pending == p["total"], (p, pending)
    emb = EmbedWorker(
        pool, HashModel(384), Settings(embedding_model=MODEL), worker_id="e-p", once=True
    )
    await asyncio.wait_for(emb.run(), 60)
    job, pending = await adds_up()
    assert pending == 0 and job["status"] == "succeeded", job
    assert job["progress"]["done"] + job["progress"]["failed"] == job["progress"]["total"]


async def test_a_name_too_long_to_index_fails_its_file_alone(
    pool: asyncpg.Pool, parser: ParsePool
) -> None:
    """A 3,000-character identifier (generated code) and 400 nested functions make names
    longer than a b-tree entry holds. The message's write used to fail for all its files,
    five times over, with PostgreSQL's error; now those files fail alone, saying why, and
    the others are indexed at once."""
    nested = "".join("    " * i + f"def f{i}():\n" for i in range(400)) + "    " * 400 + "pass\n"
    files = {
        "gen.py": f"def f_{'q' * 3000}():\n    return 1\n",
        "nest.py": nested,
        "ok.py": "def ok():\n    return 1\n",
    }
    acc = await submit(pool, files)
    await drain(pool, parser)
    job = await job_of(pool, acc.job_id)
    failed = {f["path"]: f["reason"] for f in job["result"]["files_failed"]}
    assert set(failed) == {"gen.py", "nest.py"}, job
    assert all("can be indexed" in r and "bytes" in r for r in failed.values()), failed
    assert job["result"]["files_indexed"] == 1 and job["attempts"] == 1
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM code_chunks WHERE qualified_name = 'ok.ok'")
            == 1
        )


async def test_chunks_and_edges_keep_separator_characters_and_empty_values(
    pool: asyncpg.Pool, parser: ParsePool
) -> None:
    """A chunk's text crosses to PostgreSQL packed into one text per column, cut at a
    separator (records.packed): a file holding that separator, and values that are empty,
    come back as they were written."""
    files = {
        "sep.py": 'def f():\n    return "\x1e\x1f"\n\n\ndef g():\n    return f()\n',
        "empty.py": "x = 1\n",
    }
    await submit(pool, files)
    await drain(pool, parser)
    async with pool.acquire() as conn:
        rows = {
            r["qualified_name"]: r
            for r in await conn.fetch(
                "SELECT qualified_name, content, signature, docstring, calls FROM code_chunks"
            )
        }
        edges = await conn.fetch(
            "SELECT source, external, candidates, target FROM code_edges "
            "WHERE relationship = 'calls' ORDER BY source"
        )
    assert rows["sep.f"]["content"] == 'def f():\n    return "\x1e\x1f"'
    assert rows["sep.f"]["docstring"] == "" and rows["sep.f"]["calls"] == []
    assert rows["sep.g"]["calls"] == ["f"]
    assert rows["empty"]["content"] == "x = 1" and rows["empty"]["signature"] == ""
    assert [tuple(e) for e in edges] == [("sep.g", "f", ["sep.g.f", "sep.f"], "sep.f")]


async def test_deleting_files_deletes_their_chunks_and_edges(
    pool: asyncpg.Pool, parser: ParsePool
) -> None:
    """What the foreign keys from chunks and edges to their file did, a statement trigger
    does (migration 0009): deleting files, by id or with their repository, takes their
    chunks and edges along, and only theirs."""
    await submit(pool, {k: v for k, v in FILES.items() if k.endswith(".py")})
    await drain(pool, parser)

    async def counts(conn: asyncpg.Connection) -> dict[str, int]:
        return {
            t: await conn.fetchval(f"SELECT count(*) FROM {t}")
            for t in ("code_files", "code_chunks", "code_edges")
        }

    async with pool.acquire() as conn:
        before = await counts(conn)
        cart = await conn.fetchval("SELECT id FROM code_files WHERE path = 'shop/cart.py'")
        mine = {
            t: await conn.fetchval(f"SELECT count(*) FROM {t} WHERE file_id = $1", cart)
            for t in ("code_chunks", "code_edges")
        }
        assert all(mine.values()), mine
        await conn.execute("DELETE FROM code_files WHERE id = $1", cart)
        after = await counts(conn)
        assert after == {
            "code_files": before["code_files"] - 1,
            "code_chunks": before["code_chunks"] - mine["code_chunks"],
            "code_edges": before["code_edges"] - mine["code_edges"],
        }
        await conn.execute("DELETE FROM code_repositories WHERE name = 'shop'")
        assert await counts(conn) == {"code_files": 0, "code_chunks": 0, "code_edges": 0}
