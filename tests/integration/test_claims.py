"""Two transfers of one name into one folder at once, with real processes: each name
sfs writes belongs to one transfer, so the second lands under the next free name and
every file said to be saved holds the bytes its sender sent."""

from __future__ import annotations

import json
import os
import re
import select
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, sha256_file
from tests.integration.peers import Finished, Receiver, make_file, start_receiver
from tests.integration.test_faults import SLOW, finish, start_sender, wait_for_progress
from tests.integration.test_json import events, start_json_receiver

pytestmark = pytest.mark.slow
#: Large enough, on the slowed-down DataChannel (SLOW), that the second transfer's
#: bytes flow while the first is still writing; the test checks that they do.
SIZE = 32 * 1024 * 1024
#: A line that says a file is in place (after whatever cleared a status line before it).
SAVED_RE = re.compile(r"Saved (/.+?)(?: \(offered as '.*'\))?$", re.MULTILINE)


def first_bytes(receiver: Receiver, timeout: float = 60) -> list[str]:
    """Read `sfs receive --json` until a progress event counts file bytes; return the
    lines read (the rest follows at the end)."""
    assert receiver.process.stdout is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([receiver.process.stdout], [], [], 0.2)
        if not ready:
            continue
        line = receiver.process.stdout.readline().decode("utf-8", "replace")
        if not line:
            break
        lines.append(line)
        event = json.loads(line)
        if event["type"] == "progress" and event["file_bytes"] > 0:
            return lines
    said = receiver.stop().stderr
    raise AssertionError(f"no file bytes reached the second receiver; its stderr:\n{said}")


def test_two_receivers_in_one_folder_never_claim_each_others_file(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    src_a = make_file(tmp_path / "a" / "same", SIZE)
    src_b = make_file(tmp_path / "b" / "same", SIZE)
    sent_sha = {"a": sha256_file(src_a), "b": sha256_file(src_b)}
    assert sent_sha["a"] != sent_sha["b"]
    out = tmp_path / "out"
    # One receiver as a person runs it (status lines), one as a script does (--json).
    first = start_receiver(sfs_server, out, "--yes")
    second, _ = start_json_receiver(sfs_server, out, "--yes")
    sender_a = start_sender(sfs_server, first.code, src_a, *SLOW)
    wait_for_progress(out, "same", 1024 * 1024, sender=sender_a, receiver=first)
    sender_b = start_sender(sfs_server, second.code, src_b, *SLOW)
    early = first_bytes(second)
    # The overlap: the second's bytes flow while the first has not finished.
    assert first.process.poll() is None, "the first transfer ended before the second began"

    sent_a, sent_b = finish(sender_a), finish(sender_b)
    got_a, got_b = first.finish(), second.finish()
    said = f"first:\n{got_a.stderr}\n{got_a.stdout}\nsecond:\n{got_b.stderr}"
    # Every file reported saved holds exactly what its sender sent.
    saved = [(Path(path), sent_sha["a"]) for path in SAVED_RE.findall(got_a.stderr)]
    done = [e for e in events("".join(early) + got_b.stdout) if e["type"] == "done"]
    saved += [(Path(f["path"]), f["sha256"]) for e in done for f in e["files"]]
    assert saved, f"nothing was saved\n{said}"
    for path, digest in saved:
        assert sha256_file(path) == digest, f"{path} is not what was said to be saved\n{said}"
    for e in done:
        assert all(f["sha256"] == sent_sha["b"] for f in e["files"]), said
    assert_both_landed(out, sent_sha, [sent_a, sent_b], [got_a, got_b], said)


def assert_both_landed(
    out: Path,
    sent_sha: dict[str, str],
    senders: list[Finished],
    receivers: list[Finished],
    said: str,
) -> None:
    """Nothing lost: both transfers succeeded, the first under its name and the second
    under the next free one, and nothing else is left in the folder."""
    for process in senders + receivers:
        assert process.returncode == 0, said
    assert sorted(os.listdir(out)) == ["same", "same (1)"], said
    assert sha256_file(out / "same") == sent_sha["a"], said
    assert sha256_file(out / "same (1)") == sent_sha["b"], said
    assert f"Saved {out / 'same'}" in receivers[0].stderr, said
    done: list[dict[str, Any]] = [e for e in events(receivers[1].stdout) if e["type"] == "done"]
    assert [f["path"] for e in done for f in e["files"]] == [str(out / "same (1)")], said
