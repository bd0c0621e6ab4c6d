"""`sfs send --exclude PATTERN` and `--gitignore` (issue 30): what a sent folder leaves
out, on real trees, with --gitignore checked against git itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sfs.errors import SourceError
from sfs.peer.files.exclusion import LeaveOut
from sfs.peer.files.sources import inspect_tree

TREE = {
    "src/a.py": "a",
    "src/z.tmp": "t",
    "src/build/o.bin": "b",
    "src/.gitignore": "*.tmp\n!keep.tmp\n",
    "src/keep.tmp": "k",
    "logs/x.log": "l",
    "top.log": "l",
    "keep.log": "k",
    "node_modules/x/index.js": "n",
    "a/node_modules/m.js": "n",
    "a/b/deep.txt": "d",
    "a/b/.gitignore": "deep.txt\n",
    "docs/build/readme.md": "r",
    ".gitignore": "/docs/build/\nsrc/build/\n*.swp\n",
    "notes.swp": "s",
}


def make_tree(root: Path) -> Path:
    for name, text in TREE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def sent(root: Path, leave_out: LeaveOut | None) -> set[str]:
    tree = inspect_tree([root], leave_out)
    return {"/".join((*f.folder[1:], f.name)) for f in tree.files}


def test_exclude_patterns_are_gitignore_style(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "project")
    kept = sent(root, LeaveOut(("*.log", "!keep.log", "**/node_modules", "build/")))
    assert "top.log" not in kept
    assert "logs/x.log" not in kept
    assert "keep.log" in kept
    assert not any("node_modules" in name for name in kept)
    assert not any("/build/" in f"/{name}" for name in kept)
    assert "src/a.py" in kept
    assert "src/z.tmp" in kept  # no --gitignore: .gitignore files are only files
    tree = inspect_tree([root], LeaveOut(("*.log", "!keep.log", "**/node_modules", "build/")))
    # top.log, logs/x.log; node_modules, a/node_modules, src/build, docs/build
    assert tree.left_out == (2, 4)


def test_nothing_is_left_out_without_options(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "project")
    assert sent(root, None) == set(TREE)
    assert inspect_tree([root]).left_out == (0, 0)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_gitignore_keeps_what_git_keeps(tmp_path: Path) -> None:
    """The files --gitignore sends are the files git would track: `git ls-files
    --others --exclude-standard` in a new repository of the same tree (nested
    .gitignore files, a negation, an anchored pattern, a folder pattern)."""
    root = make_tree(tmp_path / "project")
    git = ["git", "-C", str(root), "-c", "core.excludesFile=/dev/null"]
    subprocess.run([*git, "init", "-q"], check=True)
    listed = subprocess.run(
        [*git, "ls-files", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    kept = sent(root, LeaveOut(gitignore=True))
    assert kept == set(listed)
    assert ".git/HEAD" not in kept  # its own folder, which git never lists


def test_exclude_wins_over_a_gitignore_negation(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "project")
    kept = sent(root, LeaveOut(("keep.tmp",), gitignore=True))
    assert "src/keep.tmp" not in kept


def test_a_named_file_is_always_sent(tmp_path: Path) -> None:
    """Patterns apply inside named folders: a file named on the command line is meant."""
    root = make_tree(tmp_path / "project")
    tree = inspect_tree([root / "top.log", root / "src"], LeaveOut(("*.log", "*.py")))
    names = {f.name for f in tree.files}
    assert "top.log" in names
    assert "a.py" not in names


def test_a_folder_left_with_nothing_to_send_says_so(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    root.mkdir()
    (root / "a.log").write_text("x")
    with pytest.raises(SourceError, match="what --exclude or --gitignore leaves out"):
        inspect_tree([root], LeaveOut(("*.log",)))


def test_a_gitignore_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "project")
    outside = tmp_path / "elsewhere"
    outside.write_text("*.py\n")
    (root / "src" / ".gitignore").unlink()
    (root / "src" / ".gitignore").symlink_to(outside)
    assert "src/a.py" in sent(root, LeaveOut(gitignore=True))
