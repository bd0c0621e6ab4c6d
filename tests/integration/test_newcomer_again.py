"""What a newcomer hit on the command line, round two (issue 23, items 3, 4, 12, 13):
mistyped codes named before any prompt, `--stdout` refused on a terminal, folder offers
that lead with their summary, and the wording of hints, refusals and final lines.

Real `sfs` processes, on a real pseudo-terminal where the behaviour is a terminal's,
against a local `sfs serve`; received files are checked by SHA-256.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    ServerProcess,
    peer_env,
    read_line_matching,
    sfs_command,
    sha256_file,
    stop_process,
)
from tests.integration.peers import CODE_RE, Finished, make_file, run_sender, start_receiver
from tests.integration.test_terminal import (
    Terminal,
    receive_on_terminal,
    render,
    send_on_terminal,
    terminal_env,
)

NOWHERE = "http://127.0.0.1:9"
WAIT_SECONDS = 30


def run_on_terminal(
    *args: str, cwd: Path, env: dict[str, str], typed: bytes = b""
) -> tuple[int, str]:
    """`sfs ARGS` with stdin and stderr on a pty (stdout a pipe); what the terminal showed."""
    tty = Terminal()
    if typed:
        os.write(tty.controller, typed)
    process = subprocess.Popen(
        sfs_command(*args),
        stdin=tty.terminal,
        stdout=subprocess.PIPE,
        stderr=tty.terminal,
        env=env,
        cwd=cwd,
    )
    tty.close_ours()
    try:
        stdout, _ = process.communicate(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        stop_process(process)
        raise AssertionError(f"sfs did not end; the terminal showed:\n{tty.text()}") from None
    shown = tty.finish()
    return process.returncode, shown + stdout.decode("utf-8", "replace")


# -- item 3: a mistyped code is not a file name ------------------------------------------


MISTYPED = [
    ("ALX232-beam-haddock", "ALX232-…", "ALX-232-beam-haddock"),
    ("0LX-232-beam-haddock", "0LX-232-…", "OLX-232-beam-haddock"),
    ("ALX-2321-beam-haddock", "ALX-2321-…", None),
]


@pytest.mark.parametrize(("typed", "shown", "meant"), MISTYPED, ids=[m[0] for m in MISTYPED])
def test_a_mistyped_code_is_named_before_any_prompt(
    tmp_path: Path, typed: str, shown: str, meant: str | None
) -> None:
    """On a terminal: exit 2 with the likely code, and no `Code:` prompt. Before: the
    prompt, then `'ALX232-beam-haddock': no such file` (exit 9) once a code was typed."""
    make_file(tmp_path / "report.pdf", 10)
    code, screen = run_on_terminal(
        "send", typed, "report.pdf", cwd=tmp_path, env=peer_env(NOWHERE),
        typed=b"ABC-123-tiger-lamp\n",
    )  # fmt: skip
    assert code == 2, screen
    assert "Code:" not in screen
    assert f"{shown} looks like a mistyped code" in screen, screen
    assert "no such file" not in screen
    if meant:
        assert f"(did you mean {meant}?)" in "".join(render(screen)), screen
    else:
        assert "did you mean" not in screen


@pytest.mark.parametrize(("typed", "shown", "meant"), MISTYPED, ids=[m[0] for m in MISTYPED])
def test_a_mistyped_code_without_a_terminal_is_named_and_its_words_kept_out(
    tmp_path: Path, typed: str, shown: str, meant: str | None
) -> None:
    """stderr may be a log: only the corrected ID is suggested. Before: `no code given:
    pass it first…` (exit 2) although one was given."""
    make_file(tmp_path / "report.pdf", 10)
    done = subprocess.run(
        sfs_command("send", typed, "report.pdf"),
        stdin=subprocess.DEVNULL, capture_output=True, env=peer_env(NOWHERE), cwd=tmp_path,
        timeout=WAIT_SECONDS,
    )  # fmt: skip
    result = Finished(done.returncode, done.stdout.decode(), done.stderr.decode())
    assert result.returncode == 2, result.stderr
    assert f"{shown} looks like a mistyped code" in result.stderr
    assert "no code given" not in result.stderr
    assert "beam" not in result.stderr
    assert "haddock" not in result.stderr
    if meant:
        assert f"(did you mean {meant[:7]}-…?)" in result.stderr


def test_a_missing_file_is_named_before_the_code_prompt(tmp_path: Path) -> None:
    """Before: `Code:` was asked first, and the code spent on a file that is not there."""
    code, screen = run_on_terminal(
        "send", "report.pdf", cwd=tmp_path, env=peer_env(NOWHERE), typed=b"ABC-123-tiger-lamp\n"
    )
    assert code == 9, screen
    assert "Code:" not in screen
    assert "Error: 'report.pdf': no such file" in render(screen), screen


def test_a_file_named_like_a_code_is_sent(sfs_server: ServerProcess, tmp_path: Path) -> None:
    """A file that exists is a file, whatever its name looks like."""
    src = make_file(tmp_path / "ALX232-beam-haddock", 1000)
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes")
    sent = run_sender(sfs_server, receiver.code, str(src))
    assert receiver.finish().returncode == 0
    assert sent.returncode == 0, sent.stderr
    assert sha256_file(tmp_path / "out" / src.name) == sha256_file(src)


# -- item 4: --stdout on a terminal --------------------------------------------------------


def test_stdout_on_a_terminal_is_refused_before_a_code_is_shown(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """Before: a code was shown and the file's bytes went to the screen."""
    tty = Terminal()
    process = subprocess.Popen(
        sfs_command("receive", "--stdout", "--yes", "-o", str(tmp_path)),
        stdin=subprocess.DEVNULL, stdout=tty.terminal, stderr=subprocess.PIPE,
        env=terminal_env(sfs_server),
    )  # fmt: skip
    tty.close_ours()
    try:
        _, err = process.communicate(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        stop_process(process)
        raise AssertionError(f"not refused; the terminal showed:\n{tty.text()}") from None
    shown = tty.finish()
    assert process.returncode == 2, err
    assert b"stdout is a terminal" in err
    assert b"--force-tty" in err
    assert "Code:" not in shown
    assert b"Code:" not in err


def test_stdout_on_a_terminal_with_force_tty_writes_there(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    message = b"plain words for the screen\n"
    (tmp_path / "note.txt").write_bytes(message)
    tty = Terminal()
    receiver = subprocess.Popen(
        sfs_command("receive", "--stdout", "--force-tty", "--yes", "-o", str(tmp_path)),
        stdin=subprocess.DEVNULL, stdout=tty.terminal, stderr=subprocess.PIPE,
        env=terminal_env(sfs_server),
    )  # fmt: skip
    tty.close_ours()
    try:
        assert receiver.stderr is not None
        seen = b""
        deadline = time.monotonic() + WAIT_SECONDS
        while (found := re.search(rb"Code: (\S+)", seen)) is None:
            assert time.monotonic() < deadline, seen
            chunk = os.read(receiver.stderr.fileno(), 1000)
            assert chunk, seen  # it ended without a code
            seen += chunk
        sent = run_sender(sfs_server, found.group(1).decode(), str(tmp_path / "note.txt"))
        receiver.wait(WAIT_SECONDS)
    finally:
        stop_process(receiver)
    shown = tty.finish()
    assert sent.returncode == 0, sent.stderr
    assert receiver.returncode == 0, seen
    assert "plain words for the screen" in shown


# -- item 12: folder offers ----------------------------------------------------------------


def test_a_folder_offer_leads_with_its_summary_and_top_level(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """Before: 35-odd single files listed first, the summary only in the question."""
    photos = tmp_path / "src" / "photos"
    (photos / "2024").mkdir(parents=True)
    for i in range(40):
        make_file(photos / f"p{i:02d}.jpg", 1000)
    make_file(photos / "2024" / "deep.jpg", 500)
    make_file(tmp_path / "src" / "notes.txt", 200)
    tty = Terminal()
    receiver, code = receive_on_terminal(sfs_server, tty, tmp_path / "out", "--yes")
    sent = run_sender(sfs_server, code, str(photos), str(tmp_path / "src" / "notes.txt"))
    receiver.wait(PROCESS_TIMEOUT_SECONDS)
    lines = render(tty.finish())
    assert sent.returncode == 0, sent.stderr
    assert receiver.returncode == 0, lines
    summary = "1 file and 1 folder (42 files, 40.7 kB)"
    first = next((i for i, line in enumerate(lines) if summary in line), -1)
    assert first >= 0, lines
    assert lines[first] == f"tester offers {summary}", lines
    assert lines[first + 1 : first + 3] == ["  photos/  41 files, 40.5 kB", "  notes.txt  200 B"]
    assert lines[first + 3].startswith(f"Receive {summary} from tester? yes"), lines
    assert not any(".jpg" in line for line in lines[: first + 3]), lines
    for path in [*photos.rglob("*.jpg"), tmp_path / "src" / "notes.txt"]:
        got = tmp_path / "out" / path.relative_to(tmp_path / "src")
        assert sha256_file(got) == sha256_file(path)


# -- item 13: wording and units ------------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("side", ["receive", "send --print-code"])
def test_the_hint_wraps_between_words(
    sfs_server: ServerProcess, tmp_path: Path, columns: int, side: str
) -> None:
    """Before: 121 characters, cut mid-word at 80 and 120 columns."""
    src = make_file(tmp_path / "f.bin", 10)
    tty = Terminal(columns=columns)
    args = [*side.split(), *([str(src)] if "send" in side else ["--yes", "-o", str(tmp_path)])]
    process = subprocess.Popen(
        sfs_command(*args),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=tty.terminal,
        env=terminal_env(sfs_server),
    )  # fmt: skip
    tty.close_ours()
    try:
        read_line_matching(process, CODE_RE)
        waited = threading.Event()
        for _ in range(int(WAIT_SECONDS / 0.05)):
            if "Waiting…" in tty.text():
                break
            waited.wait(0.05)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(WAIT_SECONDS)
        stop_process(process)
    shown = tty.finish()

    def hint(rows: list[str]) -> list[str]:
        start = next(i for i, row in enumerate(rows) if row.startswith("On the other computer"))
        end = next(i for i, row in enumerate(rows) if row.endswith("Waiting…"))
        return rows[start : end + 1]

    # The rows the terminal shows, joined at spaces, are the lines sfs wrote: every
    # row was broken between two words, none inside one.
    assert " ".join(hint(render(shown, columns=columns))) == " ".join(hint(render(shown)))


def test_declining_is_said_plainly_and_the_sender_told_once(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """Before: a red `Error: you declined the transfer` here, and `the receiver declined
    the transfer (declined by the receiver)` on the sender."""
    src = make_file(tmp_path / "a.txt", 5)
    tty = Terminal()
    os.write(tty.controller, b"n\n")
    (tmp_path / "out").mkdir()
    receiver = subprocess.Popen(
        sfs_command("receive", "-o", str(tmp_path / "out")),
        stdin=tty.terminal, stdout=subprocess.PIPE, stderr=tty.terminal,
        env=terminal_env(sfs_server),
    )  # fmt: skip
    tty.close_ours()
    try:
        code = read_line_matching(receiver, CODE_RE).group(1)
        sent = run_sender(sfs_server, code, str(src))
        receiver.wait(WAIT_SECONDS)
    finally:
        stop_process(receiver)
    shown = tty.finish()
    assert receiver.returncode == 6, shown
    assert render(shown)[-1].endswith("Declined: nothing was received."), render(shown)
    assert "Error" not in shown
    assert "\x1b[31m" not in shown
    assert sent.returncode == 6
    assert sent.error_line() == "Error: the receiver declined the transfer"
    assert os.listdir(tmp_path / "out") == []


def test_sizes_read_the_same_on_the_bar_prompt_and_final_line(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """Before: the bar said `3.15M` (tqdm's units) where the rest says `3.1 MB`, and a
    quick transfer ended `in 0.0 s`."""
    src = make_file(tmp_path / "big.bin", 3_145_728)
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes", "--quiet")
    tty = Terminal()
    sender = send_on_terminal(sfs_server, tty, receiver.code, str(src))
    stdout, _ = sender.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
    shown = tty.finish()
    assert sender.returncode == 0, shown
    assert receiver.finish().returncode == 0
    assert sha256_file(tmp_path / "out" / "big.bin") == sha256_file(src)
    assert "/3.1 MB [" in shown, shown
    assert not re.search(r"\d[kMG]B?/s|\d[kMG]\b", shown), shown
    final = stdout.decode()
    assert final.startswith("Sent big.bin (3.1 MB) in "), final
    assert " 0.0 s" not in final
    assert " 0 B/s" not in final


def test_a_tiny_transfer_ends_with_real_figures(sfs_server: ServerProcess, tmp_path: Path) -> None:
    src = make_file(tmp_path / "tiny.bin", 37)
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes")
    sent = run_sender(sfs_server, receiver.code, str(src))
    received = receiver.finish()
    assert (sent.returncode, received.returncode) == (0, 0), sent.stderr + received.stderr
    for line in (sent.stdout, received.stdout):
        match = re.search(r"\(37 B\) in ([\d.]+) s, ", line)
        assert match, line
        assert float(match.group(1)) > 0, line


def test_a_text_message_is_sized_as_everything_else(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """Before: `a text message (37 bytes)` beside files of `37 B`."""
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes")
    sent = run_sender(sfs_server, receiver.code, "--text", "x" * 37)
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr + received.stderr
    assert received.returncode == 0, sent.stderr + received.stderr
    assert "Receive a text message (37 B) from tester? yes" in received.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "said", "not_said"),
    [
        (
            ("receive", "--yes", "AB-123-tiger-lamp"),
            None,
            "three letters and three digits",
            "receiver",
        ),
        (("send", "--text", "-"), "hello", "`sfs send CODE --text -`", "`sfs send CODE -`"),
        (("send", "--connect-timeout", "abc", "f"), None, "'abc' is not a valid number", "range"),
        (("serve", "--port", "abc"), None, "'abc' is not a valid integer.", "range"),
    ],
    ids=["sender-first-code", "text-from-stdin", "float", "integer"],
)
def test_usage_errors_in_words(
    tmp_path: Path, args: tuple[str, ...], stdin: str | None, said: str, not_said: str
) -> None:
    done = subprocess.run(
        sfs_command(*args),
        input=None if stdin is None else stdin.encode(),
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True, env=peer_env(NOWHERE), cwd=tmp_path, timeout=WAIT_SECONDS,
    )  # fmt: skip
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert said in err
    assert not_said not in err.replace(said, "")


def test_a_connection_reset_is_told_in_words(sfs_server: ServerProcess, tmp_path: Path) -> None:
    """The receiver is killed mid-transfer on the direct TCP path, unread data in its
    socket: its kernel resets the connection. Before: `[Errno 104] Connection reset
    by peer`, shown raw."""
    src = make_file(tmp_path / "big.bin", 256 * 1024 * 1024)
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes", "--quiet")
    err_path = tmp_path / "sender.err"
    with open(err_path, "wb") as err:
        sender = subprocess.Popen(
            sfs_command(
                "send", "--transport", "tcp", "--reconnect-window", "0", receiver.code, str(src)
            ),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            env=peer_env(sfs_server.url),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while not any(p.stat().st_size for p in (tmp_path / "out").glob(".*.sfs-part")):
            assert time.monotonic() < deadline, err_path.read_text()
            assert sender.poll() is None, err_path.read_text()
            threading.Event().wait(0.02)
        receiver.process.kill()
        sender.wait(WAIT_SECONDS)
    finally:
        stop_process(sender)
        receiver.stop()
    said = err_path.read_text()
    assert sender.returncode == 7, said
    assert "Errno" not in said, said
    error = [line for line in said.splitlines() if "Error:" in line]
    assert len(error) == 1, said
    # A reset, told in words; or, when the receiver had read all that came before it
    # died, its FIN (the reset comes after it): it went away.
    assert re.search(r"the direct connection broke|went away before the transfer", error[0]), said
