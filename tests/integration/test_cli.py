"""End to end: a real `sfs serve` process and real `sfs send` / `sfs receive` processes
talking over real aiortc on 127.0.0.1.  Every received file is checked by SHA-256."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sfs.defaults import DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES
from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    ServerProcess,
    in_netns,
    peer_env,
    sfs_command,
    sha256_file,
    start_server,
    stop_process,
)
from tests.integration.peers import Finished, make_file, run_sender, start_receiver


@pytest.mark.parametrize(
    ("size", "chunk"),
    [
        (0, None),
        (1, None),
        # Around the 16 KiB chunk of the original design, and around today's default.
        (16 * 1024 - 1, 16 * 1024),
        (16 * 1024, 16 * 1024),
        (16 * 1024 + 1, 16 * 1024),
        (DEFAULT_CHUNK_BYTES - 1, None),
        (DEFAULT_CHUNK_BYTES, None),
        (DEFAULT_CHUNK_BYTES + 1, None),
        (10 * 1024 * 1024, None),
        (10 * 1024 * 1024, MAX_CHUNK_BYTES),
    ],
    ids=[
        "0B",
        "1B",
        "16KiB-1",
        "16KiB",
        "16KiB+1",
        "default-1",
        "default",
        "default+1",
        "10MiB",
        "10MiB-largest-chunks",
    ],
)
def test_transfer_of_size(
    sfs_server: ServerProcess, tmp_path: Path, size: int, chunk: int | None
) -> None:
    src = make_file(tmp_path / "src.bin", size)
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes")
    chunk_args = ("--chunk-size", str(chunk)) if chunk else ()
    sent = run_sender(sfs_server, *chunk_args, receiver.code, str(src))
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert sha256_file(tmp_path / "out" / "src.bin") == sha256_file(src)
    assert os.listdir(tmp_path / "out") == ["src.bin"]
    assert re.search(
        r"^Sent src\.bin \(.+\) in [\d.]+ s(, .+/s)?, direct over TCP$", sent.stdout, re.M
    ), sent.stdout
    assert re.search(r"^Received src\.bin \(.+\) in [\d.]+ s", received.stdout, re.M)


def test_unicode_name_and_several_files(sfs_server: ServerProcess, tmp_path: Path) -> None:
    first = make_file(tmp_path / "résumé 📄 Ünïcode.pdf", 70_000)
    second = make_file(tmp_path / "second.txt", 5)
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes")
    sent = run_sender(sfs_server, receiver.code, str(first), str(second))
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert sha256_file(tmp_path / "out" / first.name) == sha256_file(first)
    assert sha256_file(tmp_path / "out" / "second.txt") == sha256_file(second)
    assert "Sent 2 files" in sent.stdout


def test_code_typed_on_stdin_stays_out_of_argv(sfs_server: ServerProcess, tmp_path: Path) -> None:
    src = make_file(tmp_path / "f.bin", 1000)
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes")
    sent = run_sender(sfs_server, str(src), stdin=receiver.code + "\n")
    assert receiver.finish().returncode == 0
    assert sent.returncode == 0, sent.stderr
    assert sha256_file(tmp_path / "out" / "f.bin") == sha256_file(src)


def test_wrong_code_fails_both_sides_and_burns_the_code(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "f.bin", 100)
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes")
    peer_id, first, second = receiver.code[:7], *receiver.code[8:].split("-")
    wrong = f"{peer_id}-{second}-{first}" if first != second else f"{peer_id}-able-acid"
    sent = run_sender(sfs_server, wrong, str(src))
    received = receiver.finish()
    assert sent.returncode == 5, sent.stderr
    assert received.returncode == 5, received.stderr
    assert "Wrong code" in sent.error_line()
    assert "Wrong code" in received.error_line()
    assert os.listdir(tmp_path / "out") == []
    # The one guess is spent: the right code no longer works.
    retry = run_sender(sfs_server, receiver.code, str(src))
    assert retry.returncode == 4, retry.stderr
    assert receiver.code[8:] not in sfs_server.log_text()


def test_unknown_peer_id(sfs_server: ServerProcess, tmp_path: Path) -> None:
    src = make_file(tmp_path / "f.bin", 10)
    sent = run_sender(sfs_server, "ZZZ-000-tiger-lamp", str(src))
    assert sent.returncode == 4
    assert "No receiver is waiting" in sent.error_line()


def transfer_with_prompt(
    server: ServerProcess, src: Path, out: Path, answer: bytes
) -> tuple[Finished, Finished]:
    """Run a receiver on a real pseudo-terminal and answer its prompt with ``answer``."""
    controller, terminal = pty.openpty()
    try:
        receiver = start_receiver(server, out, stdin=terminal)
        os.close(terminal)
        os.write(controller, answer)  # typed ahead; read when the prompt comes
        sent = run_sender(server, receiver.code, str(src))
        return sent, receiver.finish()
    finally:
        os.close(controller)


def test_prompt_accept(sfs_server: ServerProcess, tmp_path: Path) -> None:
    src = make_file(tmp_path / "a.txt", 5)
    sent, received = transfer_with_prompt(sfs_server, src, tmp_path / "out", b"y\n")
    assert "Receive a.txt (5 B) from tester? [y/N]" in received.stderr
    assert sent.returncode == 0, sent.stderr
    assert sha256_file(tmp_path / "out" / "a.txt") == sha256_file(src)


def test_prompt_reject(sfs_server: ServerProcess, tmp_path: Path) -> None:
    src = make_file(tmp_path / "a.txt", 5)
    sent, received = transfer_with_prompt(sfs_server, src, tmp_path / "out", b"n\n")
    assert sent.returncode == 6, sent.stderr
    assert "declined" in sent.error_line()
    assert received.returncode == 6
    assert os.listdir(tmp_path / "out") == []


def test_no_terminal_and_no_yes_is_refused(sfs_server: ServerProcess, tmp_path: Path) -> None:
    done = subprocess.run(
        sfs_command("receive"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=peer_env(sfs_server.url),
        timeout=30,
    )
    assert done.returncode == 2
    assert b"--yes" in done.stderr


def test_a_same_named_file_is_kept_and_the_prompt_says_so_before_accept(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """Both are kept: the prompt says where the new one goes before the user answers,
    the sender succeeds, and sending it again finds it already there (same SHA-256)."""
    src = make_file(tmp_path / "report.pdf", 3000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.pdf").write_bytes(b"precious")
    receiver = start_receiver(sfs_server, out, "--yes")
    sent = run_sender(sfs_server, receiver.code, str(src))
    received = receiver.finish()
    assert received.returncode == 0, received.stderr
    assert sent.returncode == 0, sent.stderr
    said = received.stderr
    note = "report.pdf exists: will save as report (1).pdf"
    assert note in said, said
    assert said.index(note) < said.index("Receive report.pdf"), said
    assert f"Saved {out / 'report (1).pdf'} (offered as 'report.pdf')" in said, said
    assert (out / "report.pdf").read_bytes() == b"precious"
    assert sha256_file(out / "report (1).pdf") == sha256_file(src)

    # Again: the copy already here is found whole, and nothing new is written.
    receiver = start_receiver(sfs_server, out, "--yes")
    sent = run_sender(sfs_server, receiver.code, str(src))
    received = receiver.finish()
    assert received.returncode == 0, received.stderr
    assert sent.returncode == 0, sent.stderr
    assert sorted(os.listdir(out)) == ["report (1).pdf", "report.pdf"], received.stderr

    # --overwrite replaces, and says so first.
    receiver = start_receiver(sfs_server, out, "--yes", "--overwrite")
    sent = run_sender(sfs_server, receiver.code, str(src))
    received = receiver.finish()
    assert received.returncode == 0, received.stderr
    assert sent.returncode == 0
    assert "report.pdf exists: will replace it (--overwrite)" in received.stderr
    assert sha256_file(out / "report.pdf") == sha256_file(src)


def test_json_reports_the_planned_and_the_written_path(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    from tests.integration.test_json import events, start_json_receiver

    src = make_file(tmp_path / "same", 5000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "same").write_bytes(b"the user's own")
    receiver, _ = start_json_receiver(sfs_server, out, "--yes")
    sent = run_sender(sfs_server, receiver.code, str(src))
    received = receiver.finish()
    assert received.returncode == 0, received.stderr
    assert sent.returncode == 0, sent.stderr
    stream = events(received.stdout)
    (offer,) = [e for e in stream if e["type"] == "offer"]
    (done,) = [e for e in stream if e["type"] == "done"]
    assert offer["files"][0]["path"] == str(out / "same (1)"), offer
    assert offer["notes"] == ["same exists: will save as same (1)"], offer
    assert done["files"][0]["path"] == str(out / "same (1)"), done
    assert sha256_file(out / "same (1)") == sha256_file(src)
    assert (out / "same").read_bytes() == b"the user's own"


def test_server_down(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    url = server.url
    stop_process(server.process)
    src = make_file(tmp_path / "f.bin", 10)
    sent = run_sender(server, "ABC-123-tiger-lamp", str(src), url=url)
    assert sent.returncode == 3
    assert "cannot reach the signaling server" in sent.error_line()
    done = subprocess.run(
        sfs_command("receive", "--yes"),
        capture_output=True,
        env=peer_env(url),
        timeout=30,
        cwd=tmp_path,
    )
    assert done.returncode == 3
    assert b"Error: cannot reach" in done.stderr


def test_missing_source_fails_before_contacting_anyone(tmp_path: Path) -> None:
    done = subprocess.run(
        sfs_command("send", "ABC-123-tiger-lamp", str(tmp_path / "nope")),
        capture_output=True,
        env=peer_env("http://127.0.0.1:9"),
        timeout=30,
    )
    assert done.returncode == 9
    assert done.stderr.decode().strip().startswith("Error:")
    assert "no such file" in done.stderr.decode()


def test_malformed_code_is_a_usage_error(tmp_path: Path) -> None:
    src = make_file(tmp_path / "f.bin", 10)
    done = subprocess.run(
        sfs_command("send", "ABC-123-notaword-xyzzy", str(src)),
        capture_output=True,
        env=peer_env("http://127.0.0.1:9"),
        timeout=30,
    )
    assert done.returncode == 2
    assert b"is not an sfs code word" in done.stderr


def wait_for_part_file(out: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = list(out.glob(".*.sfs-part"))
        if parts and parts[0].stat().st_size > 0:
            return
        time.sleep(0.05)
    raise AssertionError("the transfer never started writing")


@pytest.mark.parametrize("transport", ["datachannel", "tcp"])
@pytest.mark.parametrize("interrupted", ["sender", "receiver"])
def test_ctrl_c_ends_both_sides_and_leaves_nothing(
    request: pytest.FixtureRequest, tmp_path: Path, interrupted: str, transport: str
) -> None:
    netns: str | None = None
    if transport == "tcp":
        # Over TCP 96 MiB cross loopback in about a second: too soon to interrupt for
        # sure. In a namespace of its own, loopback is slowed to 200 Mbit/s (tbf, with
        # a burst that holds loopback's 64 KiB packets).
        netns = request.getfixturevalue("netns")
        in_netns(netns, "tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "200mbit",
                 "burst", "1mb", "latency", "100ms")  # fmt: skip
        server = start_server(tmp_path, netns=netns)
    else:
        server = request.getfixturevalue("sfs_server")
    src = make_file(tmp_path / "big.bin", 96 * 1024 * 1024)
    out = tmp_path / "out"
    receiver = start_receiver(server, out, "--yes", "--quiet", netns=netns)
    sender = subprocess.Popen(
        sfs_command(
            "send",
            "--quiet",
            "--transport",
            transport,
            "--chunk-size",
            "1024",
            receiver.code,
            str(src),
            netns=netns,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=peer_env(server.url),
    )
    try:
        wait_for_part_file(out)
        victim = sender if interrupted == "sender" else receiver.process
        victim.send_signal(signal.SIGINT)
        _, sender_err = sender.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
        received = receiver.finish()
    finally:
        stop_process(sender)
        if netns is not None:
            stop_process(server.process)
    if interrupted == "sender":
        assert sender.returncode == 130, sender_err
        assert received.returncode == 7, received.stderr
        assert "cancelled by the user" in received.error_line()
    else:
        assert received.returncode == 130, received.stderr
        assert sender.returncode == 7, sender_err
    # Nothing at the final name; what arrived is kept only as sfs's hidden partial
    # copy, for a resume, and the one who pressed Ctrl-C is told so.
    assert sorted(os.listdir(out)) == [".big.bin.sfs-info", ".big.bin.sfs-part"]
    if interrupted == "receiver":
        assert "running both commands again resumes it" in received.stderr


def test_version_and_help() -> None:
    done = subprocess.run(sfs_command("--version"), capture_output=True, timeout=30)
    assert done.returncode == 0
    assert done.stdout.startswith(b"sfs 0.")
    assert b"protocols: transfer 3" in done.stdout


def test_striped_over_several_connections(sfs_server: ServerProcess, tmp_path: Path) -> None:
    first = make_file(tmp_path / "a.bin", 3 * 1024 * 1024 + 7)
    second = make_file(tmp_path / "b.bin", 5)
    # A receiver that takes QUIC answers one peer connection: this one keeps to the
    # DataChannels, so that three are striped.
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes", env={"SFS_QUIC": "0"})
    sent = run_sender(sfs_server, "--streams", "3", receiver.code, str(first), str(second))
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert sha256_file(tmp_path / "out" / "a.bin") == sha256_file(first)
    assert sha256_file(tmp_path / "out" / "b.bin") == sha256_file(second)


def test_settings_from_the_config_file_and_the_environment_reach_a_transfer(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """The file says --yes and --overwrite to the receiver (no terminal: without --yes it
    would refuse; a file of that name is there: without --overwrite, exit 10) and
    --transport tcp to the sender, whose SFS_TRANSPORT=datachannel wins over it."""
    config = tmp_path / "config.toml"
    config.write_text(
        "quiet = true\n[receive]\nyes = true\noverwrite = true\n"
        "[send]\ntransport = 'tcp'\nchunk-size = 16384\n"
    )
    src = make_file(tmp_path / "f.bin", 3 * 1024 * 1024 + 5)
    out = tmp_path / "out"
    out.mkdir()
    (out / "f.bin").write_bytes(b"an older copy")
    settings = {"SFS_CONFIG": str(config)}
    receiver = start_receiver(sfs_server, out, env=settings)
    sent = subprocess.run(
        sfs_command("send", receiver.code, str(src)),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_SECONDS,
        env={**peer_env(sfs_server.url), **settings, "SFS_TRANSPORT": "datachannel"},
    )
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert sha256_file(out / "f.bin") == sha256_file(src)
    assert "over TCP" not in sent.stdout, sent.stdout
    assert "direct" in sent.stdout, sent.stdout
    assert sent.stderr == ""
    assert received.stderr == ""
