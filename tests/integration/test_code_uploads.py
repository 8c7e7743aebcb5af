"""Hostile and useless uploads through the real API (in-process, real database): archive
attacks, bombs, empty uploads. Each is a clear 4xx and leaves nothing behind, not even in a
repository that existed before (prune included)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import AsyncIterator

import httpx
import pytest

from mnemo_core import db
from tests.helpers import gzip_bomb
from tests.integration.test_api import client_for, make_settings
from tests.integration.test_code_api import drain, files_json

MAX_EXPANDED = 200_000


@pytest.fixture
async def api(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        dsn,
        max_file_bytes=10_000,
        max_archive_expanded_bytes=MAX_EXPANDED,
        max_archive_entries=50,
    )
    async for c in client_for(settings):
        yield c


async def counts(dsn: str) -> dict[str, int]:
    conn = await db.connect(dsn, application_name="test-uploads")
    try:
        return {
            t: await conn.fetchval(f"SELECT count(*) FROM {t}")
            for t in ("code_repositories", "code_files", "jobs", "pgmq.q_index")
        }
    finally:
        await conn.close()


def tar_gz(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
    return buf.getvalue()


def link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def special(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


def zip_of(entries: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


OK = ("ok.py", b"def fine():\n    return 1\n")

ATTACKS = {
    "tar dot-dot": (tar_gz([OK, ("../evil.py", b"x = 1\n")]), 422, "leaves the repository"),
    "tar dot-dot inside": (tar_gz([OK, ("a/../../x.py", b"x\n")]), 422, "leaves the repository"),
    "tar absolute": (tar_gz([OK, ("/etc/cron.d/evil", b"* * * * * x\n")]), 422, "absolute"),
    "tar symlink": (tar_gz([OK, link("pw.py", tarfile.SYMTYPE, "/etc/passwd")]), 422, "links"),
    "tar hardlink": (tar_gz([OK, link("h.py", tarfile.LNKTYPE, "ok.py")]), 422, "links"),
    "tar fifo": (tar_gz([OK, special("pipe", tarfile.FIFOTYPE)]), 422, "special files"),
    "tar device": (tar_gz([OK, special("dev", tarfile.CHRTYPE)]), 422, "special files"),
    "zip dot-dot": (zip_of({"ok.py": OK[1], "../../x.py": b"x\n"}), 422, "leaves the repository"),
    "zip absolute": (zip_of({"ok.py": OK[1], "/tmp/x.py": b"x\n"}), 422, "absolute"),
    "zip symlink": (zip_of({"ok.py": OK[1]}, symlink="link.py"), 422, "links"),
    "zip bomb": (
        zip_of({f"f{i}.txt": b"0" * 9_000 for i in range(40)}),  # 360 kB from ~10 kB
        413,
        "decompression bomb",
    ),
    "gzip bomb": (gzip_bomb(), 413, "decompression bomb"),
    "too many entries": (
        zip_of({f"{i}.py": b"x = 1\n" for i in range(60)}),
        413,
        "MNEMO_MAX_ARCHIVE_ENTRIES",
    ),
    "not an archive": (b"PK\x03\x04 but not a zip at all", 422, "not a readable"),
}


@pytest.mark.parametrize("case", list(ATTACKS))
async def test_archive_attacks_are_refused_and_write_nothing(
    api: httpx.AsyncClient, dsn: str, case: str
) -> None:
    # A repository that exists before: the refused upload (with prune) must not touch it.
    r = await api.post(
        "/v1/code/index",
        json={"repository": "shop", "files": files_json({"keep.py": "x = 1\n"})},
    )
    assert r.status_code == 202
    before = await counts(dsn)
    data, status, needle = ATTACKS[case]
    assert len(data) < 100_000  # small on the wire; the bombs are big only when expanded
    r = await api.post(
        "/v1/code/index",
        data={"repository": "shop", "prune": "true"},
        files={"archive": ("up.tgz", data, "application/octet-stream")},
    )
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"], r.json()
    assert await counts(dsn) == before
    repos = (await api.get("/v1/code/repositories")).json()["repositories"]
    assert [(x["name"], x["files"]) for x in repos] == [("shop", 1)]


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({}, "no files to index: the archive holds no files"),
        (
            {"logo.png": b"\x89PNG\r\n\x1a\n\x00\x00", "latin.txt": "caf\u00e9".encode("latin-1")},
            "no files to index: all 2 skipped (logo.png: binary file (NUL bytes); "
            "latin.txt: not valid UTF-8)",
        ),
        ({"huge.py": b"x" * 20_000}, "huge.py: larger than 10000 bytes"),
        ({"README": b"hi\n"}, "README: fewer than 2 path components (strip_components=1)"),
    ],
)
async def test_an_upload_with_nothing_usable_is_refused(
    api: httpx.AsyncClient, dsn: str, files: dict[str, bytes], needle: str
) -> None:
    """The audit's case: an archive holding only a binary file, with prune, answered 202
    and removed all 30 files of the repository."""
    r = await api.post(
        "/v1/code/index", json={"repository": "shop", "files": files_json({"a.py": "a = 1\n"})}
    )
    assert r.status_code == 202
    before = await counts(dsn)
    strip = "1" if "README" in files else "0"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    r = await api.post(
        "/v1/code/index",
        data={"repository": "shop", "prune": "true", "strip_components": strip},
        files={"archive": ("up.tgz", buf.getvalue(), "application/gzip")},
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("body.archive: no files to index")
    assert needle in r.json()["detail"]
    assert await counts(dsn) == before


async def test_an_empty_file_list_is_refused(api: httpx.AsyncClient, dsn: str) -> None:
    for prune in (False, True):
        r = await api.post("/v1/code/index", json={"repository": "x", "files": [], "prune": prune})
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == "body.files: no files to index: the list is empty"
    assert set((await counts(dsn)).values()) == {0}


async def test_skipped_files_are_named_with_a_limit(api: httpx.AsyncClient) -> None:
    data = tar_gz([(f"b{i}.bin", b"\x00") for i in range(14)])
    r = await api.post(
        "/v1/code/index",
        data={"repository": "x"},
        files={"archive": ("up.tgz", data, "application/gzip")},
    )
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "all 14 skipped" in detail and "b9.bin" in detail and "b10.bin" not in detail
    assert detail.endswith("; and 4 more)")


async def test_unknown_file_types_are_indexed_as_windows(api: httpx.AsyncClient, dsn: str) -> None:
    files = {
        "semver/range.bnf": "range-set ::= range ( logical-or range ) *\n",
        "grammar.peg": "start <- expr !.\n",
        "bin/run": "set -e\nexec python -m app\n",
        "ok.py": "def f():\n    return 1\n",
    }
    data = tar_gz([(p, c.encode()) for p, c in files.items()])
    r = await api.post(
        "/v1/code/index",
        data={"repository": "g"},
        files={"archive": ("g.tgz", data, "application/gzip")},
    )
    assert r.status_code == 202, r.text
    await drain(dsn)
    job = (await api.get(f"/v1/jobs/{r.json()['job_id']}")).json()
    assert job["status"] == "succeeded", job
    assert job["result"]["files_indexed"] == 4 and job["result"]["files_failed"] == []
    r = await api.get("/v1/code/search", params={"q": "logical", "mode": "lexical"})
    hits = {(x["path"], x["kind"]) for x in r.json()["results"]}
    assert ("semver/range.bnf", "window") in hits
