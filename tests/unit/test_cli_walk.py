"""`mnemo index`'s folder walk (no server): what it sends, what it skips and says why."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mnemo_cli.code import walk
from tests.helpers import BIN


def test_walk_lists_links_binaries_and_big_files(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "email").mkdir(parents=True)
    (root / "email" / "__init__.py").write_text("x = 1\n")
    (root / "email" / "message.py").write_text("class Message: pass\n")
    (root / "logo.bin").write_bytes(b"\x89PNG\x00")
    (root / "big.txt").write_text("x" * 2000)
    (root / "latin.txt").write_bytes("caf\u00e9".encode("latin-1"))
    (root / "node_modules").mkdir()
    (root / "node_modules" / "dep.js").write_text("x\n")
    (root / "ignored.py").write_text("x\n")
    (root / ".gitignore").write_text("ignored.py\nignored_link\n")
    outside = tmp_path / "secret.txt"
    outside.write_text("do not send\n")
    (root / "to_secret.txt").symlink_to(outside)
    (root / "to_dir").symlink_to(root / "email", target_is_directory=True)
    (root / "ignored_link").symlink_to(outside)

    files, skipped = walk(root, max_file_bytes=1000)
    # Paths relative to the folder itself: no top folder for the server to guess about.
    assert [p for p, _ in files] == [".gitignore", "email/__init__.py", "email/message.py"]
    assert skipped == [
        ("big.txt", "larger than 1000 bytes"),
        ("latin.txt", "not UTF-8"),
        ("logo.bin", "binary"),
        ("to_dir", "symbolic link"),
        ("to_secret.txt", "symbolic link"),
    ]


def test_code_subcommand_help_says_what_each_does() -> None:
    out = subprocess.run(
        [str(BIN / "mnemo"), "code", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "symbol of a symbol" not in out
    assert "a symbol with its callers and callees" in out
    assert "who calls a symbol" in out and "what a symbol calls" in out
