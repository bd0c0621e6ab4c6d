"""`--json` on real `sfs send`, `sfs receive` and `sfs peers` processes: every line of
stdout is one JSON object, and the events say what happened."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import (
    ServerProcess,
    peer_env,
    read_line_matching,
    sfs_command,
    sha256_file,
)
from tests.integration.lan import lan_hosts, run, start_waiting
from tests.integration.peers import Finished, Receiver, make_file, run_sender, run_sfs

JSON_CODE_RE = r'^\{"type":"code","code":"([A-Z]{3}-[0-9]{3}-[a-z]+-[a-z]+)"'


def events(stdout: str) -> list[dict[str, Any]]:
    """Every line of stdout as a JSON object with a type: nothing else is there."""
    parsed = []
    for line in stdout.splitlines():
        assert line.isascii(), repr(line)
        assert line.isprintable(), repr(line)
        event = json.loads(line)
        assert isinstance(event, dict), line
        assert isinstance(event.get("type"), str), line
        parsed.append(event)
    return parsed


def start_json_receiver(server: ServerProcess, out: Path, *args: str) -> tuple[Receiver, str]:
    """`sfs receive --json` waiting with a code; also its first stdout line."""
    out.mkdir(exist_ok=True)
    stderr_path = out.parent / f"receiver-{time.monotonic_ns()}.err"
    with open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            sfs_command("receive", "--json", "--output", str(out), *args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=peer_env(server.url),
        )
    match = read_line_matching(process, JSON_CODE_RE)
    return Receiver(process, match.group(1), stderr_path), match.string


def kinds(stream: list[dict[str, Any]]) -> list[str]:
    """The event types in order, a run of progress events as one."""
    out: list[str] = []
    for event in stream:
        if not (event["type"] == "progress" and out and out[-1] == "progress"):
            out.append(event["type"])
    return out


def test_a_transfer_as_json_events(sfs_server: ServerProcess, tmp_path: Path) -> None:
    src = make_file(tmp_path / "report.bin", 3 * 1024 * 1024 + 17)
    digest = sha256_file(src)
    receiver, first = start_json_receiver(sfs_server, tmp_path / "out", "--yes")
    sent = run_sender(sfs_server, "--json", receiver.code, str(src))
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    # --json: nothing but errors on stderr (no bars, no status lines).
    assert sent.stderr == ""
    assert received.stderr == ""

    theirs = events(first + received.stdout)
    assert kinds(theirs) == ["code", "offer", "progress", "done"]
    code = theirs[0]
    assert code == {
        "type": "code",
        "code": receiver.code,
        "link": f"{sfs_server.url}/#{receiver.code}",
    }
    assert theirs[1] == {
        "type": "offer",
        "kind": "files",
        "sender": "tester",
        "files": [
            {
                "name": "report.bin",
                "size": src.stat().st_size,
                "path": str(tmp_path / "out" / "report.bin"),
            }
        ],
        "folders": [],
        "notes": [],
        "total": src.stat().st_size,
        "paired": None,
    }
    ours = events(sent.stdout)
    assert kinds(ours) == ["progress", "done"]
    for stream, path in ((ours, src), (theirs, tmp_path / "out" / "report.bin")):
        done = stream[-1]
        last_progress = stream[-2]
        assert last_progress["bytes"] == last_progress["total"] == src.stat().st_size
        assert last_progress["file_bytes"] == last_progress["file_size"]
        assert done["total_bytes"] == src.stat().st_size
        assert done["resumed_bytes"] == 0
        assert done["route"] == "direct over TCP"
        [record] = done["files"]
        assert record["name"] == "report.bin"
        assert record["size"] == src.stat().st_size
        assert record["path"] == str(path.absolute())
        assert record["sha256"] == digest == sha256_file(Path(record["path"]))
        assert record["resumed_bytes"] == 0
        assert record["seconds"] >= 0
        assert record["route"] == done["route"]
    assert ours[-1]["role"] == "send"
    assert theirs[-1]["role"] == "receive"
    # A few progress events a second at most (and one at the end of the file).
    for stream in (ours, theirs):
        count = sum(e["type"] == "progress" for e in stream)
        assert count <= 2 + stream[-1]["seconds"] / 0.25 + 1


def test_a_wrong_code_is_an_error_event_with_the_exit_code(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "f.bin", 100)
    receiver, first = start_json_receiver(sfs_server, tmp_path / "out", "--yes")
    peer_id, one, two = receiver.code[:7], *receiver.code[8:].split("-")
    wrong = f"{peer_id}-{two}-{one}" if one != two else f"{peer_id}-able-acid"
    sent = run_sender(sfs_server, "--json", wrong, str(src))
    received = receiver.finish()
    for finished, stdout in ((sent, sent.stdout), (received, first + received.stdout)):
        assert finished.returncode == 5, finished.stderr
        assert "Wrong code" in finished.error_line()  # the one line on stderr stays
        error = events(stdout)[-1]
        assert error["type"] == "error"
        assert error["exit_code"] == finished.returncode
        assert "Wrong code" in error["message"]
    assert kinds(events(first + received.stdout)) == ["code", "error"]
    assert os.listdir(tmp_path / "out") == []


def test_a_usage_error_is_an_error_event_too(tmp_path: Path) -> None:
    """No terminal and no --yes: exit 2, its line on stderr and an error event."""
    done: Finished = run_sfs("receive", "--json", env=peer_env("http://127.0.0.1:9"))
    assert done.returncode == 2
    assert "--yes" in done.stderr
    [error] = events(done.stdout)
    assert error["type"] == "error"
    assert error["exit_code"] == 2
    assert "--yes" in error["message"]


def test_peers_json_once(tmp_path: Path) -> None:
    with lan_hosts(2) as (a, b):
        receiver = start_waiting(a, tmp_path, "receive", "--yes", "--name", "bob\x1b[2J")
        try:
            listed = run(b, "peers", "--json", "--once", "2")
        finally:
            receiver.stop()
    assert listed.returncode == 0, listed.stderr
    [peer] = events(listed.stdout)
    assert peer["type"] == "peer"
    assert "id" not in peer
    assert receiver.code[:7] not in listed.stdout  # records carry no ID
    assert peer["name"] == "bob\x1b[2J"
    assert peer["role"] == "receiver"
    assert peer["address"] == a.ipv4
    assert isinstance(peer["since"], int)
    assert receiver.code[8:] not in listed.stdout  # nor the words
