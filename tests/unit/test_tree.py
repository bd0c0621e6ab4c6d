"""Folders: walking a real tree (sfs.peer.files.tree), and the receiver's side of
offered paths, malicious ones included (sfs.peer.proto.tree)."""

from __future__ import annotations

import os
import socket
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfs.errors import RemoteProtocolError, SourceError
from sfs.peer.files.tree import walk
from sfs.peer.proto.names import is_own_name
from sfs.peer.proto.tree import MAX_DEPTH, local_parts, plan_tree


def test_walk_keeps_the_tree_and_skips_what_is_not_a_file(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "src" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "src" / "a.py").write_text("print(1)\n")
    (root / "src" / "deep" / "ünïcode ✓.txt").write_bytes(b"x" * 10)
    run = root / "run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o755)
    os.utime(run, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    (root / "link").symlink_to("/etc/passwd")
    os.mkfifo(root / "fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "sock"))
        (tmp_path / "named-link").symlink_to(root / "src" / "a.py")
        walked = walk([root, tmp_path / "named-link"])
    parts = [(e.parts, e.is_dir) for e in walked.entries]
    assert parts == [
        (("project",), True),
        (("project", "empty"), True),
        (("project", "run.sh"), False),
        (("project", "src"), True),
        (("project", "src", "a.py"), False),
        (("project", "src", "deep"), True),
        (("project", "src", "deep", "ünïcode ✓.txt"), False),
        (("named-link",), False),  # named by the user: followed
    ]
    by_parts = {e.parts: e for e in walked.entries}
    assert by_parts[("project", "run.sh")].executable
    assert by_parts[("project", "run.sh")].mtime_ns == 1_700_000_000_000_000_000
    assert not by_parts[("project", "src", "a.py")].executable
    assert walked.files == 4
    assert walked.total_size == 9 + 10 + 10 + 9
    assert sorted(walked.skipped) == [
        f"{root / 'fifo'} (a FIFO)",
        f"{root / 'link'} (a symbolic link)",
        f"{root / 'sock'} (a socket)",
    ]


def test_walk_refuses_what_cannot_be_sent(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read"):
        walk([tmp_path / "missing"])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("1")
    (tmp_path / "b" / "x").write_text("2")
    with pytest.raises(SourceError, match="called 'x'"):
        walk([tmp_path / "a" / "x", tmp_path / "b" / "x"])
    with pytest.raises(SourceError, match="at most 3"):
        walk([tmp_path / "a", tmp_path / "b"], max_entries=3)
    deep = tmp_path / "deep"
    path = deep
    for i in range(MAX_DEPTH + 1):
        path = path / f"{i}"
    path.mkdir(parents=True)
    with pytest.raises(SourceError, match="nested more than"):
        walk([deep])


@pytest.mark.parametrize(
    "parts",
    [
        ("a", "..", "x"),
        ("..", "x"),
        ("a", ".", "x"),
        ("a", "", "x"),
        ("a/b",),
        ("a\\b",),
        ("a\0b",),
        (),
        ("a",) * (MAX_DEPTH + 1),
        ("\x1b",),
    ],
)
def test_malicious_paths_are_refused(parts: tuple[str, ...]) -> None:
    with pytest.raises(RemoteProtocolError):
        local_parts(parts)


def test_components_are_sanitised_one_by_one() -> None:
    assert local_parts((".hidden", "CON", "a\u202eb.txt")) == ("hidden", "_CON", "ab.txt")


def test_folders_get_the_same_windows_rule_as_files() -> None:
    """Names Windows cannot store, fixed on every OS (the tree may be copied on):
    trailing dots and spaces, devices with or without an extension, ``<>:"|?*``."""
    offered = [
        (("docs. ", "nul.txt"), False),
        (("COM1", "a<b>:c"), True),
        (("con .tar.gz", "x. . ."), False),
        (("LPT\u00b9", 'q"|?*'), False),
    ]
    assert plan_tree(offered) == [
        ("docs", "_nul.txt"),
        ("_COM1", "a_b__c"),
        ("_con .tar.gz", "x"),
        ("_LPT\u00b9", "q____"),
    ]


def test_a_folder_and_its_windows_twin_meet_in_one_name() -> None:
    # "photos." is stored as "photos" on Windows: the same folder here too, and two
    # files that meet in one name there are both kept.
    planned = plan_tree([(("photos", "a.jpg"), False), (("photos.", "A.JPG"), False)])
    assert planned == [("photos", "a.jpg"), ("photos", "A (1).JPG")]


def test_two_files_that_become_one_name_are_both_kept() -> None:
    planned = plan_tree(
        [(("a", "x.txt"), False), (("a", "X.TXT"), False), (("a", "x (1).txt"), False)]
    )
    assert planned == [("a", "x.txt"), ("a", "X (1).TXT"), ("a", "x (1) (1).txt")]


def test_inside_a_folder_a_name_keeps_its_dot_and_at_the_top_it_does_not() -> None:
    planned = plan_tree(
        [(("project", ".gitignore"), False), ((".hidden", ".env"), False), ((".top",), False)]
    )
    assert planned == [("project", ".gitignore"), ("hidden", ".env"), ("top",)]


@pytest.mark.parametrize(
    ("offered", "local"),
    [
        (".x.sfs-part", "x.sfs-part"),
        (".X.SFS-INFO", "X.SFS-INFO"),
        (".a.sfs-lock", "a.sfs-lock"),
        (".sfs-staging-abc", "sfs-staging-abc"),
        ("..x", "..x"),
        (".x.sfs-part.txt", ".x.sfs-part.txt"),
    ],
)
def test_a_name_of_sfss_own_form_is_never_kept_hidden(offered: str, local: str) -> None:
    assert local_parts(("d", offered)) == ("d", local)
    assert not is_own_name(local)
    with pytest.raises(RemoteProtocolError):
        local_parts(("d", "..."))


@pytest.mark.parametrize(
    "offered",
    [
        [(("a",), False), (("a", "b"), False)],  # a file where a folder goes
        [(("a", "b"), False), (("a",), False)],  # and the other way round
        [(("a", "b"), True), (("a", "b"), False)],
    ],
)
def test_clashes_are_refused_before_anything_is_written(
    offered: list[tuple[tuple[str, ...], bool]],
) -> None:
    with pytest.raises(RemoteProtocolError, match="cannot be placed"):
        plan_tree(offered)


def test_a_folder_may_be_named_again() -> None:
    assert plan_tree([(("a",), True), (("a", "b"), False), (("a",), True)]) == [
        ("a",),
        ("a", "b"),
        ("a",),
    ]


@given(st.lists(st.text(max_size=12), min_size=1, max_size=8))
def test_a_planned_path_stays_inside_the_output_folder(parts: list[str]) -> None:
    try:
        local = local_parts(parts)
    except RemoteProtocolError:
        return
    joined = PurePosixPath("/out", *local)
    assert joined.parts[:2] == ("/", "out")
    assert len(joined.parts) == len(local) + 2
    assert all(p not in ("", ".", "..") and "/" not in p and "\0" not in p for p in local)


def test_a_link_in_the_output_folder_is_never_followed(tmp_path: Path) -> None:
    from sfs.errors import DestinationExistsError
    from sfs.peer.files.destinations import Plan, make_folders, plan_destinations
    from sfs.peer.proto.wire import FileInfo, Offer

    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "project").symlink_to(elsewhere)
    offer = Offer((FileInfo("a.txt", 1, folder=("project",)),))
    # The link is not a folder of ours: the offered one goes beside it.
    for overwrite in (False, True):
        plan = plan_destinations(offer, out, overwrite=overwrite)
        assert plan.paths == [out / "project (1)" / "a.txt"]
    # A link inside a folder that is continued is refused.
    (out / "tree" / "sub").mkdir(parents=True)
    (out / "tree" / "sub" / "b.txt").write_bytes(b"x")
    (out / "tree" / "inner").symlink_to(elsewhere)
    offer = Offer(
        (
            FileInfo("b.txt", 1, folder=("tree", "sub")),
            FileInfo("c.txt", 1, folder=("tree", "inner")),
        )
    )
    with pytest.raises(DestinationExistsError, match="in the way of an offered folder"):
        plan_destinations(offer, out, overwrite=False, resume=True)
    with pytest.raises(DestinationExistsError):
        make_folders(Plan([], [out / "project", out / "project" / "x"]))
    assert os.listdir(elsewhere) == []
