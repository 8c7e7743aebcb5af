"""Archive unpacking: traversal, links, bombs, binaries, invalid UTF-8 (no database)."""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from mnemo_api.archive import Limits, TooLarge, clean_path, unpack
from mnemo_core.errors import InvalidInput
from tests.helpers import gzip_bomb

LIMITS = Limits(max_file_bytes=1000, max_expanded_bytes=100_000, max_entries=50)


def tar_gz(entries: list[tuple[str, bytes | None, bytes]]) -> bytes:
    """entries: (name, data or None, type) with type b'f' file, b'l' symlink, b'h' hardlink,
    b'd' folder."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == b"l":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            elif kind == b"h":
                info.type, info.linkname = tarfile.LNKTYPE, "a.py"
                tar.addfile(info)
            elif kind == b"d":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                assert data is not None
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_of(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_paths_are_kept_as_they_are() -> None:
    """A lone top folder is a package as often as a wrapper: nothing is stripped unasked."""
    for data in (
        tar_gz([("email/__init__.py", b"x = 1\n", b"f"), ("email/message.py", b"y\n", b"f")]),
        zip_of({"email/__init__.py": b"x = 1\n", "email/message.py": b"y\n"}),
    ):
        files, skipped = unpack(data, LIMITS)
        assert sorted(f.path for f in files) == ["email/__init__.py", "email/message.py"]
        assert skipped == []


def test_strip_components_like_tar() -> None:
    for data in (
        tar_gz(
            [
                ("repo-main/README", b"hi\n", b"f"),
                ("repo-main/src/a.py", b"x = 1\n", b"f"),
                ("top.txt", b"t\n", b"f"),
            ]
        ),
        zip_of({"repo-main/README": b"hi\n", "repo-main/src/a.py": b"x = 1\n", "top.txt": b"t"}),
    ):
        files, skipped = unpack(data, LIMITS, strip_components=1)
        assert sorted(f.path for f in files) == ["README", "src/a.py"]
        assert [(s.path, s.reason) for s in skipped] == [
            ("top.txt", "fewer than 2 path components (strip_components=1)")
        ]
        files, skipped = unpack(data, LIMITS, strip_components=2)
        assert [f.path for f in files] == ["a.py"] and len(skipped) == 2


def test_strip_components_checks_the_whole_path_first() -> None:
    # Stripping never hides what is wrong with the part that goes.
    with pytest.raises(InvalidInput, match="leaves the repository"):
        unpack(tar_gz([("../x/a.py", b"x", b"f")]), LIMITS, strip_components=2)
    with pytest.raises(InvalidInput, match="links"):
        unpack(tar_gz([("top/link.py", None, b"l")]), LIMITS, strip_components=1)


def test_paths_that_collide_after_stripping_are_reported() -> None:
    data = tar_gz([("a/x.py", b"1\n", b"f"), ("b/x.py", b"2\n", b"f")])
    files, skipped = unpack(data, LIMITS, strip_components=1)
    assert [(f.path, f.data) for f in files] == [("x.py", b"1\n")]
    assert [(s.path, s.reason) for s in skipped] == [
        ("x.py", "appears twice in the archive (the first is kept)")
    ]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("../evil.py", b"x", b"f")], "leaves the repository"),
        ([("/etc/cron.d/x", b"x", b"f")], "absolute"),
        ([("a/../../x.py", b"x", b"f")], "leaves the repository"),
        ([("link.py", None, b"l")], "links"),
        ([("a.py", b"x", b"f"), ("hard.py", None, b"h")], "links"),
    ],
)
def test_hostile_tar_entries_refuse_the_archive(entries: list, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        unpack(tar_gz(entries), LIMITS)


def test_zip_traversal_and_symlink() -> None:
    with pytest.raises(InvalidInput, match="leaves the repository"):
        unpack(zip_of({"../../x.py": b"x"}), LIMITS)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(InvalidInput, match="links"):
        unpack(buf.getvalue(), LIMITS)


def test_zip_folder_entries_as_zip_tools_write_them(tmp_path: Path) -> None:
    """``zip -r``, ``git archive --format=zip`` and ``shutil.make_archive`` list every
    folder as an entry ending in ``/``: nothing to read, and no reason to refuse the zip."""
    src = tmp_path / "src"
    (src / "pkg" / "sub").mkdir(parents=True)
    (src / "pkg" / "__init__.py").write_text("x = 1\n")
    (src / "pkg" / "sub" / "mod.py").write_text("y = 2\n")
    made = shutil.make_archive(str(tmp_path / "out"), "zip", root_dir=src)
    with zipfile.ZipFile(made) as zf:
        assert "pkg/" in zf.namelist() and "pkg/sub/" in zf.namelist()
    with open(made, "rb") as fh:
        files, skipped = unpack(fh.read(), LIMITS)
    assert sorted(f.path for f in files) == ["pkg/__init__.py", "pkg/sub/mod.py"]
    assert skipped == []
    # A folder entry is still checked: one leaving the repository refuses the archive.
    with pytest.raises(InvalidInput, match="leaves the repository"):
        unpack(zip_of({"../up/": b"", "a.py": b"x"}), LIMITS)


def test_version_control_folders_are_skipped_as_one_entry_each() -> None:
    """``tar czf … -C checkout .`` brings the checkout's .git: its files are not read, and
    the answer lists the folder once, not its thousands of objects."""
    data = tar_gz(
        [
            ("./", None, b"d"),
            ("./.git/HEAD", b"ref: refs/heads/main\n", b"f"),
            ("./.git/hooks/update.sample", b"#!/bin/sh\n", b"f"),
            ("./.git/objects/ab/cdef", b"\x78\x01binary", b"f"),
            ("./.gitignore", b"build/\n", b"f"),
            ("./app.py", b"print(1)\n", b"f"),
            ("./vendor/lib/.hg/store", b"x", b"f"),
            ("./vendor/lib/code.py", b"y = 1\n", b"f"),
        ]
    )
    files, skipped = unpack(data, LIMITS)
    assert sorted(f.path for f in files) == [".gitignore", "app.py", "vendor/lib/code.py"]
    assert {s.path: s.reason for s in skipped} == {
        ".git/": "version-control metadata (3 files)",
        "vendor/lib/.hg/": "version-control metadata (1 file)",
    }


def test_zip_bomb_stops_early() -> None:
    # 200 entries of 900 zero bytes each: tiny compressed, 180 kB expanded > 100 kB limit.
    bomb = zip_of({f"f{i}.txt": b"0" * 900 for i in range(200)})
    assert len(bomb) < 60_000
    with pytest.raises(TooLarge):
        unpack(bomb, Limits(1000, 100_000, 1000))


def test_gzip_bomb_stops_while_decompressing() -> None:
    # One member declaring 50 MB of zeros: refused before it is all decompressed.
    with pytest.raises(TooLarge, match="decompression bomb"):
        unpack(gzip_bomb("big.txt"), LIMITS)


def test_too_many_entries() -> None:
    with pytest.raises(TooLarge, match="entries"):
        unpack(zip_of({f"{i}.py": b"x" for i in range(60)}), LIMITS)


def test_binary_invalid_utf8_and_big_files_are_skipped() -> None:
    data = zip_of(
        {
            "ok.py": b"print('hi')\n",
            "img.png": b"\x89PNG\r\n\x1a\n\x00\x00",
            "latin.txt": "caf\u00e9".encode("latin-1"),
            "huge.py": b"x" * 5000,
        }
    )
    files, skipped = unpack(data, LIMITS)
    assert [f.path for f in files] == ["ok.py"]
    reasons = {s.path: s.reason for s in skipped}
    assert "NUL" in reasons["img.png"]
    assert "UTF-8" in reasons["latin.txt"]
    assert "larger than" in reasons["huge.py"]


def test_garbage_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="not a readable"):
        unpack(b"this is not an archive at all", LIMITS)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("a/b.py", "a/b.py"), ("./a/./b.py", "a/b.py"), ("a\\b.py", "a/b.py"), ("a//b.py", "a/b.py")],
)
def test_clean_path(raw: str, expected: str) -> None:
    assert clean_path(raw, field="f", max_chars=100) == expected


@pytest.mark.parametrize("raw", ["", "/x", "C:/x", "../x", "a/../../x", "a\x00b", "dir/"])
def test_clean_path_refuses(raw: str) -> None:
    with pytest.raises(InvalidInput):
        clean_path(raw, field="f", max_chars=100)


def test_a_path_is_bounded_in_bytes() -> None:
    """Paths are b-tree keys: 40 CJK characters are 120 bytes."""
    assert clean_path("\u6587" * 33, field="f", max_chars=100)  # 99 bytes
    with pytest.raises(InvalidInput, match="longer than 100 bytes"):
        clean_path("\u6587" * 40, field="f", max_chars=100)
