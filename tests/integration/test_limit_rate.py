"""`--limit-rate` (issue 30): real `sfs send` and `sfs receive` through a real `sfs
serve` on 127.0.0.1, on the direct TCP path and on the DataChannel. A limit is a
floor on the time a transfer takes (10 MiB at 2 MiB/s: 5 s less one burst of a
quarter second), whichever side sets it: a lower bound, which load cannot break."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, sha256_file
from tests.integration.peers import make_file, run_sender, start_receiver

pytestmark = pytest.mark.slow

SIZE = 10 * 1024 * 1024
#: 10 MiB at 2 MiB/s take 5 s, less the bucket's first quarter second.
FLOOR_SECONDS = 4.0


@pytest.mark.parametrize("transport", ["tcp", "datachannel"])
@pytest.mark.parametrize("side", ["sender", "receiver"])
def test_a_limit_holds_10_mib_to_at_least_4_s(
    sfs_server: ServerProcess, tmp_path: Path, side: str, transport: str
) -> None:
    src = make_file(tmp_path / "ten.bin", SIZE)
    out = tmp_path / "out"
    limit = ("--limit-rate", "2M")
    receiver = start_receiver(sfs_server, out, "--yes", *(limit if side == "receiver" else ()))
    sent = run_sender(
        sfs_server, "--json", "--transport", transport,
        *(limit if side == "sender" else ()), receiver.code, str(src),
    )  # fmt: skip
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert sha256_file(out / src.name) == sha256_file(src)
    done = json.loads(sent.stdout.splitlines()[-1])
    assert done["type"] == "done", sent.stdout
    assert done["seconds"] >= FLOOR_SECONDS, done
    # The side that limits says so: its progress events carry the limit (--json),
    # its status lines the rate.
    progress = [json.loads(line) for line in sent.stdout.splitlines()[:-1]]
    assert {p["limit"] for p in progress} == ({2 * 1024 * 1024} if side == "sender" else {None})
    if side == "receiver":
        said = received.stderr
        assert "File data moves at 2.1 MB/s at most (--limit-rate)" in said, said


def test_without_a_limit_the_same_file_is_not_held_back(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """The floor above is the limit's doing: without it, 10 MiB on loopback take a
    fraction of that (a check that the test can fail)."""
    src = make_file(tmp_path / "ten.bin", SIZE)
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes")
    sent = run_sender(sfs_server, "--json", receiver.code, str(src))
    assert receiver.finish().returncode == 0
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout.splitlines()[-1])["seconds"] < FLOOR_SECONDS


def test_a_rate_that_is_not_one_is_a_usage_error(tmp_path: Path) -> None:
    from tests.conftest import peer_env
    from tests.integration.peers import run_sfs

    for bad in ("fast", "0", "-2M", "2X"):
        said = run_sfs("send", "--limit-rate", bad, "ABC-123-tiger-lamp", __file__,
                       env=peer_env("http://127.0.0.1:9"))  # fmt: skip
        assert said.returncode == 2, said.stderr
        assert "give bytes a second, such as 500k or 2M" in said.stderr, said.stderr
