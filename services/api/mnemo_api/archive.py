"""Repository uploads as ``.tar.gz`` / ``.tgz`` / ``.tar`` or ``.zip``, unpacked in memory
with every door closed: absolute paths, ``..``, links and special files refuse the whole
archive; entry count and expanded size are bounded while decompressing (bombs stop early);
binary, non-UTF-8 and oversized files are skipped and reported, and so is what is inside a
version-control folder (``.git``, ``.hg``, ``.svn``: a checkout archived whole brings them).

Paths are kept as they are in the archive: nothing is stripped unless asked. An archive
made with a top folder (GitHub's, ``git archive --prefix=x/``, ``tar czf … -C ~/src x``)
is unpacked with ``strip_components=1``, like ``tar --strip-components``."""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from typing import Any, BinaryIO

from mnemo_core.code import SourceFile
from mnemo_core.errors import InvalidInput


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int
    max_expanded_bytes: int
    max_entries: int
    max_path_chars: int = 1024


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


# Folders of version-control metadata: never source, and a .git holds thousands of files.
VCS_FOLDERS = frozenset({".git", ".hg", ".svn"})


class TooLarge(InvalidInput):
    """An archive beyond a size limit (answered 413)."""


def clean_path(raw: str, *, field: str, max_chars: int) -> str:
    """A repository-relative POSIX path, or InvalidInput naming what is wrong with it."""
    path = raw.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    if not path or path.endswith("/"):
        raise InvalidInput(field, f"empty file path {raw!r}")
    # Bytes, not characters: paths are b-tree keys, and 1,024 CJK characters are 3 KB.
    if len(path) > max_chars or len(path.encode("utf-8", "surrogatepass")) > max_chars:
        raise InvalidInput(field, f"path longer than {max_chars} bytes (UTF-8)")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise InvalidInput(field, f"absolute path {raw!r} is not allowed")
    if any(part in ("..",) for part in path.split("/")):
        raise InvalidInput(field, f"path {raw!r} leaves the repository ('..')")
    if "\x00" in path or any(ord(ch) < 32 for ch in path):
        raise InvalidInput(field, f"path {raw!r} contains control characters")
    return "/".join(p for p in path.split("/") if p and p != ".")


def check_text(path: str, data: bytes) -> Skipped | None:
    """Why a file's bytes are not indexable text (NUL bytes, not UTF-8), or None."""
    if b"\x00" in data:
        return Skipped(path, "binary file (NUL bytes)")
    try:
        data.decode("utf-8")  # validated, not kept: the bytes are what is stored
    except UnicodeDecodeError:
        return Skipped(path, "not valid UTF-8")
    return None


def _bomb(limit: int) -> TooLarge:
    return TooLarge(
        "archive",
        f"expands beyond {limit} bytes "
        "(MNEMO_MAX_ARCHIVE_EXPANDED_BYTES): refused as a decompression bomb",
    )


class _Counting(io.RawIOBase):
    """Reads a decompressing stream, refusing to expand past ``limit`` bytes."""

    def __init__(self, inner: io.BufferedIOBase, limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.seen = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(b))
        self.seen += len(data)
        if self.seen > self.limit:
            raise _bomb(self.limit)
        b[: len(data)] = data
        return len(data)


class _Collector:
    def __init__(self, limits: Limits, strip_components: int) -> None:
        self.limits = limits
        self.strip_components = strip_components
        self.files: list[SourceFile] = []
        self.skipped: list[Skipped] = []
        self.entries = 0
        self.paths: set[str] = set()
        self.vcs: dict[str, int] = {}  # a version-control folder: its files, not read

    def entry(self, raw_name: str) -> str:
        """The entry's whole path, checked (every entry is, whatever is stripped after)."""
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise TooLarge(
                "archive",
                f"more than {self.limits.max_entries} entries (MNEMO_MAX_ARCHIVE_ENTRIES)",
            )
        return clean_path(
            raw_name, field=f"archive entry {raw_name!r}", max_chars=self.limits.max_path_chars
        )

    def admit(
        self, raw_name: str, *, is_dir: bool, is_link: bool, is_file: bool, size: int
    ) -> str | None:
        """The repository path to read an entry's file into, or None for an entry with
        nothing to read (a folder; a file skipped, with the reason). Links and special
        files refuse the whole archive."""
        # zip names its folders with a trailing slash (tar does not): checked without it.
        path = self.entry(raw_name.rstrip("/") if is_dir else raw_name)
        if is_dir:
            return None
        if is_link:
            raise InvalidInput(f"archive entry {raw_name!r}", "links are not allowed")
        if not is_file:
            raise InvalidInput(f"archive entry {raw_name!r}", "special files are not allowed")
        target = self.target(path)
        if target is not None and self.in_vcs_folder(target):
            return None
        if target is not None and size > self.limits.max_file_bytes:
            self.too_large(target)
            return None
        return target

    def in_vcs_folder(self, path: str) -> bool:
        parts = path.split("/")
        for i, part in enumerate(parts[:-1]):
            if part in VCS_FOLDERS:
                folder = "/".join(parts[: i + 1]) + "/"
                self.vcs[folder] = self.vcs.get(folder, 0) + 1
                return True
        return False

    def finish(self) -> None:
        """One skipped entry per version-control folder, not one per file in it."""
        for folder, n in self.vcs.items():
            files = "file" if n == 1 else "files"
            self.skipped.append(Skipped(folder, f"version-control metadata ({n} {files})"))

    def too_large(self, path: str) -> None:
        self.skipped.append(Skipped(path, f"larger than {self.limits.max_file_bytes} bytes"))

    def target(self, path: str) -> str | None:
        """The repository path of a file entry after ``strip_components``, or None (and a
        skipped entry saying why) when the entry has too few components to keep."""
        n = self.strip_components
        if n == 0:
            return path
        parts = path.split("/")
        if len(parts) <= n:
            self.skipped.append(
                Skipped(path, f"fewer than {n + 1} path components (strip_components={n})")
            )
            return None
        return "/".join(parts[n:])

    def add(self, path: str, data: bytes) -> None:
        bad = check_text(path, data)
        if bad is not None:
            self.skipped.append(bad)
        elif path in self.paths:
            self.skipped.append(Skipped(path, "appears twice in the archive (the first is kept)"))
        else:
            self.paths.add(path)
            self.files.append(SourceFile(path, data))


def _tar(source: BinaryIO, gzipped: bool, limits: Limits, col: _Collector) -> None:
    raw: Any = gzip.GzipFile(fileobj=source, mode="rb") if gzipped else source
    stream = io.BufferedReader(_Counting(raw, limits.max_expanded_bytes))
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                path = col.admit(
                    member.name,
                    is_dir=member.isdir(),
                    is_link=member.issym() or member.islnk(),
                    is_file=member.isfile(),
                    size=member.size,
                )
                if path is None:
                    continue
                f = tar.extractfile(member)
                col.add(path, f.read() if f is not None else b"")
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise InvalidInput(
            "archive", f"not a readable archive (tar, tar.gz or zip): {exc}"
        ) from exc


def _zip(source: BinaryIO, limits: Limits, col: _Collector) -> None:
    try:
        zf = zipfile.ZipFile(source)
    except zipfile.BadZipFile as exc:
        raise InvalidInput("archive", f"not a readable zip archive: {exc}") from exc
    expanded = 0
    with zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            path = col.admit(
                info.filename,
                is_dir=info.is_dir(),
                is_link=stat.S_ISLNK(mode),
                is_file=stat.S_IFMT(mode) in (0, stat.S_IFREG),
                size=info.file_size,
            )
            if path is None:
                continue
            try:
                with zf.open(info) as fh:
                    # Never trust the declared size: read at most one byte past the limit.
                    body = fh.read(limits.max_file_bytes + 1)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError) as exc:
                raise InvalidInput(
                    f"archive entry {info.filename!r}", f"unreadable: {exc}"
                ) from exc
            if len(body) > limits.max_file_bytes:
                col.too_large(path)
                continue
            expanded += len(body)
            if expanded > limits.max_expanded_bytes:
                raise _bomb(limits.max_expanded_bytes)
            col.add(path, body)


def unpack(
    source: bytes | BinaryIO, limits: Limits, *, strip_components: int = 0
) -> tuple[list[SourceFile], list[Skipped]]:
    """The text files of an archive (zip or tar, gzip or not) and what was skipped.

    ``source`` is the archive, or a seekable file holding it (an upload spooled to disk is
    read from there, never copied into memory whole). Paths are the archive's own, less
    their first ``strip_components`` folders; files with no more components than that are
    skipped (listed with the reason). Blocking: run it off the event loop."""
    if strip_components < 0:
        raise InvalidInput("strip_components", "must be 0 or more")
    stream: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else source
    magic = stream.read(4)
    stream.seek(0)
    col = _Collector(limits, strip_components)
    if magic in (b"PK\x03\x04", b"PK\x05\x06"):
        _zip(stream, limits, col)
    else:
        _tar(stream, magic[:2] == b"\x1f\x8b", limits, col)
    col.finish()
    return col.files, col.skipped
