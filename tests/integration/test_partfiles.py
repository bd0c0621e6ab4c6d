"""Partial copies with real processes: sfs touches only the partial copies it wrote
itself, under hidden names of its own, so no file of the user's is ever mistaken for one."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import ServerProcess, sha256_file
from tests.integration.peers import make_file, run_sender, start_receiver
from tests.integration.test_malicious_peer import attack, offer_one_file


async def test_a_malicious_offer_leaves_the_users_part_file_alone(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    # A sender with the code offers the name of the user's unfinished download.
    out = tmp_path / "out"
    out.mkdir()
    users = make_file(out / "thesis.docx.part", 50_000)
    digest = sha256_file(users)
    result = await attack(sfs_server, tmp_path, offer_one_file("thesis.docx"))
    assert result.returncode == 0, result.stderr
    assert sha256_file(users) == digest
    assert sorted(os.listdir(out)) == ["thesis.docx", "thesis.docx.part"]


def test_sending_x_part_and_x_delivers_both(sfs_server: ServerProcess, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = [make_file(src / name, size) for name, size in (("x.part", 70_000), ("x", 30_000))]
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes")
    sent = run_sender(sfs_server, receiver.code, *map(str, files))
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert "2 files" in received.stdout + received.stderr
    for path in files:
        assert sha256_file(tmp_path / "out" / path.name) == sha256_file(path)
    assert sorted(os.listdir(tmp_path / "out")) == ["x", "x.part"]
