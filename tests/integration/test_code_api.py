"""/v1/code in-process against the real database, with in-process workers."""

from __future__ import annotations

import asyncio
import io
import tarfile
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from mnemo_core import db
from mnemo_embedder.model import HashModel
from mnemo_embedder.worker import EmbedWorker
from mnemo_indexer.pool import ParsePool
from mnemo_indexer.worker import IndexWorker
from tests.helpers import tar_gz_of
from tests.integration.test_api import client_for, make_settings
from tests.integration.test_indexer import FILES


@pytest.fixture
async def api(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(make_settings(dsn, max_file_bytes=10_000, max_files_per_request=20)):
        yield c


async def drain(dsn: str) -> None:
    pool = await db.create_pool(dsn, application_name="test-drain")
    parser = ParsePool(1, 20)
    try:
        s = make_settings(dsn)
        await asyncio.wait_for(
            IndexWorker(pool, s, parser, worker_id=f"i{uuid.uuid4().hex[:5]}", once=True).run(), 60
        )
        await asyncio.wait_for(
            EmbedWorker(
                pool, HashModel(384), s, worker_id=f"e{uuid.uuid4().hex[:5]}", once=True
            ).run(),
            60,
        )
    finally:
        await pool.close()
        parser.close()


def files_json(files: dict[str, str]) -> list[dict[str, str]]:
    return [{"path": p, "content": c} for p, c in files.items()]


async def test_index_search_graph_delete(api: httpx.AsyncClient, dsn: str) -> None:
    r = await api.post(
        "/v1/code/index",
        json={"repository": "shop", "files": files_json(FILES), "commit": "abc123"},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.json()["files_changed"] == len(FILES)
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert job["kind"] == "index_repository" and job["detail"]["files"]["parsed"] == 0
    await drain(dsn)
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "succeeded", job
    assert job["detail"]["files"] == {"parsed": 6, "failed": 0, "total": 6}
    assert job["detail"]["chunks"]["embedded"] == job["detail"]["chunks"]["total"] > 0
    for key in ("files_indexed", "files_unchanged", "files_failed", "chunks", "symbols", "edges"):
        assert key in job["result"]

    # By name (lexical), with filters; results carry everything a caller needs.
    r = await api.get(
        "/v1/code/search", params={"q": "apply_discount", "repository": "shop", "mode": "lexical"}
    )
    top = r.json()["results"][0]
    assert top["qualified_name"] == "shop.pricing.apply_discount"
    assert top["path"] == "shop/pricing.py" and top["start_line"] == 3 and top["kind"] == "function"
    assert top["signature"].startswith("def apply_discount")
    assert top["scores"]["lexical"] > 0 and top["scores"]["vector"] is None
    assert "round(price" in top["snippet"]
    r = await api.get(
        "/v1/code/search", params={"q": "format", "language": "javascript", "mode": "lexical"}
    )
    assert {x["language"] for x in r.json()["results"]} == {"javascript"}
    r = await api.post(
        "/v1/code/search",
        json={"q": "Cart", "path_prefix": "shop/c", "kind": "method", "mode": "lexical"},
    )
    assert r.json()["results"] and all(
        x["path"] == "shop/cart.py" and x["kind"] == "method" for x in r.json()["results"]
    )
    # Hybrid without a live embedder degrades to lexical and says so; vector-only is a 503.
    r = await api.get("/v1/code/search", params={"q": "discount a price"})
    assert r.status_code == 200 and r.json()["notes"] and r.json()["results"]
    assert (
        await api.get("/v1/code/search", params={"q": "x", "mode": "vector"})
    ).status_code == 503

    r = await api.get("/v1/code/graph/shop/symbols/shop.pricing.total")
    sym = r.json()
    assert sym["kind"] == "function" and sym["path"] == "shop/pricing.py"
    assert [c["qualified_name"] for c in sym["callers"]] == ["shop.cart.Cart.checkout"]
    # line: where the caller is defined; call_line: where it makes the call.
    assert sym["callers"][0]["path"] == "shop/cart.py"
    assert (sym["callers"][0]["line"], sym["callers"][0]["call_line"]) == (15, 16)
    callees = {c["qualified_name"]: c for c in sym["callees"]}
    assert callees["shop.pricing.apply_discount"]["line"] == 3
    assert callees["shop.pricing.apply_discount"]["call_line"] == 9
    assert "shop.pricing.apply_discount" in {c["qualified_name"] for c in sym["callees"]}
    r = await api.post(
        "/v1/code/graph/traverse",
        json={
            "repository": "shop",
            "start": "shop.cart.Cart.checkout",
            "direction": "out",
            "relationship": "calls",
            "max_depth": 3,
        },
    )
    assert {n["qualified_name"] for n in r.json()["nodes"]} >= {
        "shop.pricing.total",
        "shop.pricing.apply_discount",
    }
    r = await api.get(
        "/v1/code/graph/shop/path",
        params={"from": "shop.cart.Cart.checkout", "to": "shop.pricing.apply_discount"},
    )
    assert r.json()["hops"] == 2
    r = await api.get(
        "/v1/code/graph/shop/path",
        params={"from": "shop.pricing.apply_discount", "to": "shop.cart.Cart.checkout"},
    )
    assert r.json()["path"] is None
    assert (await api.get("/v1/code/graph/shop/symbols/no.such")).status_code == 404
    assert (await api.get("/v1/code/graph/nope/symbols/x")).status_code == 404
    # A walk or a path from (or to) a name nothing defines is a 404 naming it, as for the
    # symbol itself, not an empty answer that looks like "no callers".
    r = await api.post("/v1/code/graph/traverse", json={"repository": "shop", "start": "no.such"})
    assert r.status_code == 404 and "no.such" in r.json()["detail"], r.text
    # A node no chunk defines but edges leave (a file of definitions only) is still a start.
    conn = await asyncpg.connect(dsn)
    try:
        files_only = await conn.fetchval(
            "SELECT e.source FROM code_edges e WHERE e.repository = 'shop' AND NOT EXISTS"
            " (SELECT 1 FROM code_chunks c WHERE c.qualified_name = e.source) LIMIT 1"
        )
    finally:
        await conn.close()
    assert files_only is not None
    r = await api.post("/v1/code/graph/traverse", json={"repository": "shop", "start": files_only})
    assert r.status_code == 200 and r.json()["nodes"], r.text
    for src, dst in (("no.such", "shop.pricing.total"), ("shop.pricing.total", "no.such")):
        r = await api.get("/v1/code/graph/shop/path", params={"from": src, "to": dst})
        assert r.status_code == 404 and "no.such" in r.json()["detail"], r.text
    # Search filters that could match nothing are refused, naming what could.
    for params, status, field in (
        ({"language": "cobol"}, 422, "query.language"),
        ({"kind": "banana"}, 422, "query.kind"),
        ({"repository": "nope"}, 404, None),
    ):
        r = await api.get("/v1/code/search", params={"q": "total", **params})
        assert r.status_code == status, (params, r.text)
        if field:
            assert r.json()["detail"].startswith(field) and "one of" in r.json()["detail"]
    r = await api.post("/v1/code/search", json={"q": "total", "language": "Python"})
    assert r.status_code == 200 and r.json()["results"], r.text  # any case
    # JSON true is not a count (pydantic took it as 1).
    for path, body in (
        ("/v1/code/search", {"q": "total", "limit": True}),
        ("/v1/code/graph/traverse", {"repository": "shop", "start": "x", "max_depth": False}),
    ):
        r = await api.post(path, json=body)
        assert r.status_code == 422 and "not true or false" in r.json()["detail"], r.text
    # Nor is a string (pydantic took "5" as 5); a query string's "5" still is, on GET.
    for path, body in (
        ("/v1/code/search", {"q": "total", "limit": "5"}),
        ("/v1/code/graph/traverse", {"repository": "shop", "start": "x", "max_depth": "2"}),
    ):
        r = await api.post(path, json=body)
        assert r.status_code == 422 and "not a string ('" in r.json()["detail"], r.text
    r = await api.get("/v1/code/search", params={"q": "total", "limit": "1"})
    assert r.status_code == 200 and r.json()["count"] == 1, r.text
    r = await api.get("/v1/jobs", params={"kind": "bogus"})
    assert r.status_code == 422 and "query.kind" in r.json()["detail"], r.text

    repos = (await api.get("/v1/code/repositories")).json()["repositories"]
    assert repos[0]["name"] == "shop" and repos[0]["files"] == 6
    assert repos[0]["last_commit"] == "abc123" and repos[0]["embedding_coverage"] == 1.0

    r = await api.post("/v1/code/index", json={"repository": "shop", "files": files_json(FILES)})
    assert r.json()["files_unchanged"] == 6
    job = (await api.get(f"/v1/jobs/{r.json()['job_id']}")).json()
    assert job["status"] == "succeeded" and job["result"]["files_unchanged"] == 6

    assert (await api.delete("/v1/code/repositories/shop")).status_code == 204
    assert (await api.delete("/v1/code/repositories/shop")).status_code == 404
    assert (await api.get("/v1/code/repositories")).json()["repositories"] == []


async def test_an_unknown_symbol_names_the_symbols_it_may_mean(
    api: httpx.AsyncClient, dsn: str
) -> None:
    """A 404 for a symbol name lists the qualified names whose own name is its last part
    (those ending with the name as written first, then the shortest), in the message and
    as ``did_you_mean``: an agent often knows a function's name, not its module path. A
    repository's name lists the names close to it."""
    files = {
        "a/x.py": "def run():\n    return 1\n",
        "b/tools/x.py": "def run():\n    return 2\n",
        "b/tools/y.py": "class Job:\n    def run(self):\n        return 3\n",
    }
    r = await api.post("/v1/code/index", json={"repository": "runs", "files": files_json(files)})
    assert r.status_code == 202, r.text
    await drain(dsn)
    expected = {
        "run": ["a.x.run", "b.tools.x.run", "b.tools.y.Job.run"],
        "x.run": ["a.x.run", "b.tools.x.run", "b.tools.y.Job.run"],
        "tools.x.run": ["b.tools.x.run", "a.x.run", "b.tools.y.Job.run"],
        "Job.run": ["b.tools.y.Job.run", "a.x.run", "b.tools.x.run"],
    }
    for name, names in expected.items():
        r = await api.get(f"/v1/code/graph/runs/symbols/{name}")
        assert r.status_code == 404, r.text
        assert r.json()["did_you_mean"] == names, (name, r.json())
    r = await api.get("/v1/code/graph/runs/symbols/run")
    assert r.json()["detail"] == (
        "symbol run not found; did you mean a.x.run, b.tools.x.run or b.tools.y.Job.run?"
    )
    # The same for a walk's start and a path's ends; a name nothing shares gets no list.
    r = await api.post("/v1/code/graph/traverse", json={"repository": "runs", "start": "y.Job.run"})
    assert r.status_code == 404 and r.json()["did_you_mean"][0] == "b.tools.y.Job.run", r.text
    r = await api.get("/v1/code/graph/runs/path", params={"from": "a.x.run", "to": "Job.run"})
    assert r.status_code == 404 and r.json()["did_you_mean"][0] == "b.tools.y.Job.run", r.text
    r = await api.get("/v1/code/graph/runs/symbols/walk")
    assert r.status_code == 404 and "did_you_mean" not in r.json(), r.text
    assert r.json()["detail"] == "symbol walk not found"
    # A name that exists answers as before.
    assert (await api.get("/v1/code/graph/runs/symbols/a.x.run")).status_code == 200
    # A repository's name with a typo: the names close to it.
    for r in (
        await api.get("/v1/code/graph/rusn/symbols/run"),
        await api.post("/v1/code/graph/traverse", json={"repository": "run", "start": "run"}),
        await api.get("/v1/code/graph/runs-x/path", params={"from": "a", "to": "b"}),
        await api.get("/v1/code/search", params={"q": "run", "repository": "rnus"}),
        await api.delete("/v1/code/repositories/rusn"),
    ):
        assert r.status_code == 404 and r.json()["did_you_mean"] == ["runs"], r.text
        assert r.json()["detail"].endswith("not found; did you mean runs?"), r.text
    r = await api.get("/v1/code/search", params={"q": "run", "repository": "zzz"})
    assert r.json() == {"detail": "repository zzz not found"}, r.text


async def test_archive_upload(api: httpx.AsyncClient, dsn: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, content in {**FILES, "logo.png": "\x89PNG\x00\x00"}.items():
            data = content.encode("latin-1" if path.endswith(".png") else "utf-8")
            info = tarfile.TarInfo(f"shop-main/{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    r = await api.post(
        "/v1/code/index",
        data={"repository": "shop", "prune": "true", "strip_components": "1"},
        files={"archive": ("shop.tar.gz", buf.getvalue(), "application/gzip")},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["files"] == 6 and body["skipped"] == [
        {"path": "logo.png", "reason": "binary file (NUL bytes)"}
    ]
    await drain(dsn)
    assert (await api.get(f"/v1/jobs/{body['job_id']}")).json()["status"] == "succeeded"
    paths = {r["path"] for r in await rows(dsn, "SELECT path FROM code_files")}
    assert paths == set(FILES)  # shop-main/ stripped, as asked


async def rows(dsn: str, sql: str) -> list[dict]:
    conn = await db.connect(dsn, application_name="test-code-api")
    try:
        return [dict(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


EMAIL = {
    "email/__init__.py": "from email.message import Message\n\n"
    "def message_from_string(s):\n    return Message(s)\n",
    "email/message.py": "class Message:\n    def get_payload(self):\n        return 1\n",
}


async def test_archive_and_json_keep_a_lone_top_folder(api: httpx.AsyncClient, dsn: str) -> None:
    """A folder holding only email/ is the package email: archive and JSON agree on it."""
    r = await api.post(
        "/v1/code/index",
        data={"repository": "mail"},
        files={"archive": ("mail.tgz", tar_gz_of(EMAIL), "application/gzip")},
    )
    assert r.status_code == 202, r.text
    r = await api.post("/v1/code/index", json={"repository": "mail2", "files": files_json(EMAIL)})
    assert r.status_code == 202, r.text
    await drain(dsn)
    names = await rows(
        dsn, "SELECT repository, path, qualified_name FROM code_chunks ORDER BY 1, 2, 3"
    )
    by_repo: dict[str, set[tuple[str, str]]] = {}
    for n in names:
        by_repo.setdefault(n["repository"], set()).add((n["path"], n["qualified_name"]))
    assert by_repo["mail"] == by_repo["mail2"]
    assert {
        ("email/__init__.py", "email.message_from_string"),
        ("email/message.py", "email.message.Message.get_payload"),
    } <= by_repo["mail"]
    r = await api.get("/v1/code/graph/mail/symbols/email.message_from_string")
    assert [c["qualified_name"] for c in r.json()["callees"]] == ["email.message.Message"]


@pytest.mark.parametrize("value", ["-1", "33", "two", "1.5"])
async def test_bad_strip_components(api: httpx.AsyncClient, value: str) -> None:
    r = await api.post(
        "/v1/code/index",
        data={"repository": "mail", "strip_components": value},
        files={"archive": ("mail.tgz", tar_gz_of(EMAIL), "application/gzip")},
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("body.strip_components")
    assert (await api.get("/v1/code/repositories")).json()["repositories"] == []


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({}, "body.repository: Field required"),
        ({"repository": ""}, "body.repository: Field required"),
        ({"repository": "mail", "strip_component": "1"}, "body.strip_component: Extra inputs"),
        # prune removes files: only true or false (1, yes and on were taken as true).
        ({"repository": "mail", "prune": "1"}, "body.prune: expected true or false"),
        ({"repository": "mail", "prune": "yes"}, "body.prune: expected true or false"),
        # Which of two values would win is nobody's guess (the last one did).
        ({"repository": "mail", "prune": ["false", "true"]}, "body.prune: given more than once"),
        ({"repository": ["mail", "shop"]}, "body.repository: given more than once"),
    ],
)
async def test_archive_form_fields_are_checked_by_name(
    api: httpx.AsyncClient, form: dict[str, str | list[str]], message: str
) -> None:
    """A missing repository is said to be missing, and a misspelt field is refused (as in
    the JSON body) rather than ignored."""
    r = await api.post(
        "/v1/code/index",
        data=form,
        files={"archive": ("mail.tgz", tar_gz_of(EMAIL), "application/gzip")},
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(message), r.text


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        ({"repository": "shop", "files": [{"path": "../x.py", "content": ""}]}, 422, "leaves"),
        ({"repository": "shop", "files": [{"path": "/etc/x", "content": ""}]}, 422, "absolute"),
        ({"repository": "shop", "files": [{"path": "a.py", "content": "\u0000"}]}, 422, "NUL"),
        (
            {"repository": "shop", "files": [{"path": "a.py", "content": "x" * 20_000}]},
            422,
            "MNEMO_MAX_FILE_BYTES",
        ),
        (
            {
                "repository": "shop",
                "files": [{"path": f"{i}.py", "content": ""} for i in range(21)],
            },
            422,
            "MNEMO_MAX_FILES_PER_REQUEST",
        ),
        ({"repository": "shop", "files": [{"path": "a.py", "content": ""}] * 2}, 422, "twice"),
        (
            {
                "repository": "shop",
                "files": [{"path": "a.cob", "content": "", "language": "cobol"}],
            },
            422,
            "body.files.0.language: unknown language 'cobol'; one of c, cpp,",
        ),
        (
            {"repository": "shop", "files": [{"path": "a", "content": "", "language": "../../x"}]},
            422,
            "tsx, typescript (or leave it out",
        ),
        ({"repository": "bad name!", "files": []}, 422, "body.repository"),
        ({"files": []}, 422, "body.repository"),
        # prune removes files: only JSON true asks for it ("yes" and 1 were taken as true).
        ({"repository": "shop", "files": [], "prune": "yes"}, 422, "body.prune"),
        ({"repository": "shop", "files": [], "prune": 1}, 422, "body.prune"),
    ],
)
async def test_bad_uploads_write_nothing(
    api: httpx.AsyncClient, payload: dict, status: int, needle: str
) -> None:
    r = await api.post("/v1/code/index", json=payload)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]
    assert (await api.get("/v1/code/repositories")).json()["repositories"] == []


async def test_bad_archives(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/v1/code/index",
        data={"repository": "shop"},
        files={"archive": ("x.zip", b"not an archive", "application/zip")},
    )
    assert r.status_code == 422 and "not a readable" in r.json()["detail"]
    r = await api.post("/v1/code/index", data={"repository": "shop"})  # a form, no file
    assert r.status_code == 415 and "archive" in r.json()["detail"]
    r = await api.post(
        "/v1/code/index", content=b"\xff\xfe", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    r = await api.post(
        "/v1/code/index", content=b"\xff\xfe", headers={"content-type": "text/plain"}
    )
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    assert (await api.get("/v1/code/repositories")).json()["repositories"] == []


async def test_json_index_bodies_get_the_body_limit(dsn: str) -> None:
    """Only a multipart upload gets the archive limit; JSON on the same route does not."""
    settings = make_settings(dsn, max_body_bytes=2000, max_archive_bytes=1_000_000)
    big = "x = 1\n" * 500  # 3000 bytes
    async for api in client_for(settings):
        r = await api.post(
            "/v1/code/index",
            json={"repository": "j", "files": [{"path": "a.py", "content": big}]},
        )
        assert r.status_code == 413 and "MNEMO_MAX_BODY_BYTES" in r.json()["detail"]
        # A JSON body claiming to be multipart is held to the archive limit but is no form.
        r = await api.post(
            "/v1/code/index",
            content=b"{}" * 1500,
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert r.status_code == 400 and "multipart" in r.json()["detail"], r.text
        r = await api.post(
            "/v1/code/index",
            data={"repository": "j"},
            files={"archive": ("j.tgz", tar_gz_of({"a.py": big}), "application/gzip")},
        )
        assert r.status_code == 202, r.text
        r = await api.post(
            "/v1/code/index",
            data={"repository": "j"},
            files={"archive": ("j.tar", b"\0" * 1_000_001, "application/x-tar")},
        )
        assert r.status_code == 413 and "MNEMO_MAX_ARCHIVE_BYTES" in r.json()["detail"]


async def test_language_hint_is_used_and_case_insensitive(api: httpx.AsyncClient, dsn: str) -> None:
    r = await api.post(
        "/v1/code/index",
        json={
            "repository": "hint",
            "files": [
                {"path": "bin/tool", "content": "def main():\n    pass\n", "language": "Python"}
            ],
        },
    )
    assert r.status_code == 202, r.text
    await drain(dsn)
    got = await rows(dsn, "SELECT kind, qualified_name, language FROM code_chunks")
    assert got == [{"kind": "function", "qualified_name": "bin.tool.main", "language": "python"}]
