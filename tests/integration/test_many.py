"""`sfs send --many N` (issue 30): one code, up to N receivers, at once or in turn,
through a real `sfs serve` on 127.0.0.1: real processes, every file checked by SHA-256.

Each receiver runs its own key exchange with the code (one guess each, so at most N
in all), gets its own keys, progress line and resume; the (N+1)-th is refused in
words; the sender's last lines say who received what (`--json`: each receiver's
events, then a summary).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sfs.code import wordlist
from tests.conftest import (
    ServerProcess,
    peer_env,
    sfs_command,
    sha256_file,
)
from tests.integration.peers import (
    Finished,
    Receiver,
    make_file,
    run_sfs,
    start_joining,
    wait_for_partials,
)
from tests.integration.test_sender_first import start_printing_sender

pytestmark = pytest.mark.slow

SIZE = 3 * 1024 * 1024


def _sent_lines(sent: Finished) -> list[str]:
    return [line for line in sent.stdout.splitlines() if line.startswith("Receiver ")]


def test_one_code_serves_three_receivers_at_once_and_refuses_a_fourth(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """The issue's "done when": `sfs send --many 3 --print-code FILE` serves three
    `sfs receive CODE` at once (each verified) and refuses a fourth."""
    # 12 MiB held to 2 MiB/s: each takes 6 s, time for the fourth to start meanwhile.
    src = make_file(tmp_path / "slides.bin", 12 * 1024 * 1024)
    sender = start_printing_sender(sfs_server, tmp_path, "--many", "3", str(src))
    outs = [tmp_path / f"r{i}" for i in range(3)]
    # Held to 2 MiB/s, so that all three are under way when the fourth comes.
    receivers = [start_joining(sfs_server, out, sender.code, "--limit-rate", "2M") for out in outs]
    wait_for_partials(receivers, outs)
    (tmp_path / "r3").mkdir()
    fourth = run_sfs(
        "receive", "--yes", "-o", str(tmp_path / "r3"), sender.code, env=peer_env(sfs_server.url)
    )
    received = [r.finish() for r in receivers]
    sent = sender.finish()
    for done in received:
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("Received slides.bin"), done.stdout
    for out in outs:
        assert sha256_file(out / "slides.bin") == sha256_file(src)
    assert fourth.returncode == 4, fourth.stderr
    assert (
        "That code has served every receiver its sender allowed (sfs send --many)"
        in fourth.error_line()
    )
    assert list((tmp_path / "r3").iterdir()) == []
    assert sent.returncode == 0, sent.stderr
    lines = _sent_lines(sent)
    assert sorted(line[:11] for line in lines) == ["Receiver 1:", "Receiver 2:", "Receiver 3:"]
    assert all(": Sent slides.bin (12.6 MB) in " in line for line in lines), sent.stdout
    assert sent.stdout.splitlines()[-1] == "Sent to 3 receivers"
    # Each receiver had its own key exchange: three verification strings, all different.
    verifications = [
        line.split("Verification: ")[1].split()[0]
        for line in sent.stderr.splitlines()
        if "Verification: " in line
    ]
    assert len(set(verifications)) == 3, sent.stderr
    assert "up to 3" in sent.stderr  # the hint says how many may come


def test_receivers_in_turn_and_each_one_in_the_json(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """One after the other: the second comes after the first has finished. With
    --json each receiver's events say which, each ends in its own `done`, and a
    `summary` ends the run."""
    src = make_file(tmp_path / "a.bin", SIZE)
    # --json prints no "Code:" line: the code comes in the first event.
    stderr_path = tmp_path / "json-sender.err"
    with open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            sfs_command("send", "--many", "2", "--json", str(src)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=peer_env(sfs_server.url),
        )
    assert process.stdout is not None
    first = json.loads(process.stdout.readline())
    assert first["type"] == "code", first
    code = first["code"]
    for name in ("r1", "r2"):
        done = start_joining(sfs_server, tmp_path / name, code).finish()
        assert done.returncode == 0, done.stderr
        assert sha256_file(tmp_path / name / "a.bin") == sha256_file(src)
    json_sender = Receiver(process, code, stderr_path, command="send --many --json")
    sent = json_sender.finish()
    assert sent.returncode == 0, sent.stderr
    events = [json.loads(line) for line in sent.stdout.splitlines()]
    dones = [e for e in events if e["type"] == "done"]
    assert [d["receiver"] for d in dones] == [1, 2]
    assert all(d["total_bytes"] == SIZE for d in dones)
    progress = [e for e in events if e["type"] == "progress"]
    assert {p["receiver"] for p in progress} == {1, 2}
    assert events[-1] == {
        "type": "summary",
        "many": 2,
        "received": 2,
        "failed": 0,
        "stopped": None,
    }
    assert [e for e in events if e["type"] == "code"] == []  # shown once, before


def test_a_wrong_guess_spends_one_of_the_n_and_the_rest_still_work(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """Each try of the code is a guess: a wrong one fails that receiver alone (exit
    5 for it), spends its slot, and the sender says so at the end (exit 5); the right
    code still works for the next, and a third is refused."""
    src = make_file(tmp_path / "a.bin", 100_000)
    sender = start_printing_sender(sfs_server, tmp_path, "--many", "2", str(src))
    peer_id, words = sender.code[:7], sender.code[8:].split("-")
    wrong = next(w for w in wordlist() if w not in words)
    guess = start_joining(sfs_server, tmp_path / "guess", f"{peer_id}-{wrong}-{words[1]}")
    guessed = guess.finish()
    assert guessed.returncode == 5, guessed.stderr
    right = start_joining(sfs_server, tmp_path / "right", sender.code).finish()
    assert right.returncode == 0, right.stderr
    assert sha256_file(tmp_path / "right" / "a.bin") == sha256_file(src)
    third = start_joining(sfs_server, tmp_path / "third", sender.code).finish()
    assert third.returncode == 4, third.stderr
    sent = sender.finish()
    assert sent.returncode == 5, sent.stderr
    assert list((tmp_path / "guess").iterdir()) == []
    assert "Receiver 2: Sent a.bin" in sent.stdout, sent.stdout
    error = sent.error_line()
    assert "1 of 2 receivers did not receive it (receiver 1: " in error, error


def test_ctrl_c_with_no_transfer_under_way_ends_with_who_received(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """A room where fewer came than --many allows: Ctrl-C after the last transfer ends
    the wait, and the sender counts who received it (exit 0)."""
    src = make_file(tmp_path / "a.bin", 100_000)
    sender = start_printing_sender(sfs_server, tmp_path, "--many", "5", str(src))
    done = start_joining(sfs_server, tmp_path / "r1", sender.code).finish()
    assert done.returncode == 0, done.stderr
    time.sleep(0.5)  # the sender has printed its line for receiver 1
    sender.process.send_signal(signal.SIGINT)
    sent = sender.finish()
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines()[-1] == "Sent to 1 receiver (stopped waiting; --many 5)"
    late = run_sfs(
        "receive", "--yes", "-o", str(tmp_path), sender.code, env=peer_env(sfs_server.url)
    )
    assert late.returncode == 4, late.stderr  # the code went with the sender


def test_ctrl_c_before_anyone_came_is_an_interruption(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "a.bin", 1000)
    sender = start_printing_sender(sfs_server, tmp_path, "--many", "2", str(src))
    sender.process.send_signal(signal.SIGINT)
    sent = sender.finish()
    assert sent.returncode == 130, sent.stderr
    assert sent.stderr.splitlines()[-1] == "Interrupted."


def test_a_receiver_that_stopped_resumes_in_a_slot_of_its_own(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """A receiver stopped mid-transfer (Ctrl-C) keeps its partial copy; coming back
    with the same code takes another of the N and resumes it."""
    src = make_file(tmp_path / "big.bin", 16 * 1024 * 1024)
    sender = start_printing_sender(sfs_server, tmp_path, "--many", "2", str(src))
    out = tmp_path / "out"
    slow = start_joining(sfs_server, out, sender.code, "--limit-rate", "2M")
    wait_for_partials([slow], [out], at_least=2 << 20)
    slow.process.send_signal(signal.SIGINT)
    stopped = slow.finish()
    assert stopped.returncode == 130, stopped.stderr
    again = start_joining(sfs_server, out, sender.code).finish()
    assert again.returncode == 0, again.stderr
    assert "1 file resumed" in again.stdout, again.stdout
    assert sha256_file(out / "big.bin") == sha256_file(src)
    sent = sender.finish()
    assert sent.returncode == 7, sent.stderr  # receiver 1 cancelled; said in the error
    assert "Receiver 2: Sent big.bin" in sent.stdout, sent.stdout
    assert "1 file resumed" in sent.stdout, sent.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--many", "0"), "0 is not in the range 1<=x<=20"),
        (("--many", "21"), "21 is not in the range 1<=x<=20"),
        (("--many", "2", "ABC-123-tiger-lamp", "FILE"), "give only the files"),
        (("--many", "2", "@laptop", "FILE"), "give only the files"),
        (("--many", "2", "-"), "a pipe (`-`) is read once"),
        (("--many", "2", "--verify", "FILE"), "not with --many"),
    ],
)
def test_what_many_does_not_go_with(tmp_path: Path, args: tuple[str, ...], said: str) -> None:
    src = make_file(tmp_path / "f", 10)
    done = run_sfs(
        "send", *(str(src) if a == "FILE" else a for a in args), env=peer_env("http://127.0.0.1:9")
    )
    assert done.returncode == 2, done.stderr
    assert said in done.stderr, done.stderr


def test_on_the_lan_with_no_server_two_receivers_at_once(tmp_path: Path) -> None:
    """LAN mode: the sender's embedded server and its mDNS record stay until the last
    receiver is served; two receivers on two other hosts join at once, each verified;
    afterwards nobody is listed as waiting."""
    from tests.integration.lan import lan_hosts, run, start, start_waiting

    with lan_hosts(3) as (a, b, c):
        src = make_file(tmp_path / "f.bin", 6 * 1024 * 1024)
        sender = start_waiting(a, tmp_path, "send", "--many", "2", "--name", "ana", str(src))
        outs = [tmp_path / "b", tmp_path / "c"]
        receivers = []
        for host, out in zip((b, c), outs, strict=True):
            out.mkdir()
            err = tmp_path / f"{out.name}.err"
            process = start(host, "receive", "--yes", "-o", str(out), sender.code, stderr_path=err)
            receivers.append(Receiver(process, sender.code, err))
        for receiver in receivers:
            done = receiver.finish()
            assert done.returncode == 0, done.stderr
            assert f"Found {sender.code[:7]} at {a.ipv4}" in done.stderr
        for out in outs:
            assert sha256_file(out / "f.bin") == sha256_file(src)
        sent = sender.finish()
        assert sent.returncode == 0, sent.stderr
        assert "On the local network" in sent.stderr
        assert sent.stdout.splitlines()[-1] == "Sent to 2 receivers"
        listed = run(b, "peers", "--once", "2")
        assert listed.stdout.strip() == "Nobody is waiting on this network.", listed


def test_a_receiver_that_falls_silent_reconnects_while_another_finishes(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """Each receiver's session survives an outage on its own: receiver 1 is stopped
    (SIGSTOP) 14 s mid-transfer, past the 10 s idle timeout; receiver 2 finishes
    meanwhile; let go, receiver 1 meets the sender again at its own rendezvous and
    the rest of its file comes."""
    src = make_file(tmp_path / "big.bin", 16 * 1024 * 1024)
    sender = start_printing_sender(sfs_server, tmp_path, "--many", "2", str(src))
    first = start_joining(sfs_server, tmp_path / "r1", sender.code, "--limit-rate", "2M")
    wait_for_partials([first], [tmp_path / "r1"], at_least=2 << 20)
    first.process.send_signal(signal.SIGSTOP)
    try:
        second = start_joining(sfs_server, tmp_path / "r2", sender.code).finish()
        assert second.returncode == 0, second.stderr
        time.sleep(14)
    finally:
        first.process.send_signal(signal.SIGCONT)
    done = first.finish()
    sent = sender.finish()
    assert done.returncode == 0, done.stderr
    assert "Reconnected (" in done.stderr, done.stderr
    for out in ("r1", "r2"):
        assert sha256_file(tmp_path / out / "big.bin") == sha256_file(src)
    assert sent.returncode == 0, sent.stderr
    assert "Receiver 1: Connection lost; reconnecting (for up to 5 min)…" in sent.stderr
    line = next(s for s in sent.stdout.splitlines() if s.startswith("Receiver 1: "))
    assert line.endswith(", 1 reconnect"), sent.stdout
    assert sent.stdout.splitlines()[-1] == "Sent to 2 receivers"


def test_ctrl_c_mid_transfer_ends_every_receiver(sfs_server: ServerProcess, tmp_path: Path) -> None:
    """Ctrl-C while two receivers are under way (each held to 2 MiB/s, so a CANCEL
    waits behind megabytes): each reads its CANCEL and stops with its partial copy
    kept; the sender says it was interrupted (exit 130)."""
    src = make_file(tmp_path / "big.bin", 32 * 1024 * 1024)
    sender = start_printing_sender(sfs_server, tmp_path, "--many", "2", str(src))
    outs = [tmp_path / "r1", tmp_path / "r2"]
    receivers = [start_joining(sfs_server, out, sender.code, "--limit-rate", "2M") for out in outs]
    wait_for_partials(receivers, outs, at_least=2 << 20)
    sender.process.send_signal(signal.SIGINT)
    pressed = time.monotonic()
    sent = sender.finish(40)
    received = [r.finish(40) for r in receivers]
    took = time.monotonic() - pressed
    assert sent.returncode == 130, sent.stderr
    assert sent.stderr.splitlines()[-1] == "Interrupted."
    for done in received:
        assert done.returncode == 7, done.stderr
        assert "stopped the transfer: cancelled by the user" in done.stderr, done.stderr
        assert "reconnecting" not in done.stderr, done.stderr
    assert took < 30, f"the receivers stopped {took:.1f} s after the Ctrl-C"
    for out in outs:
        assert not (out / "big.bin").exists()
