"""Shell completion through click's own mechanism, in real bash, zsh and fish, as
README tells people to set it up (`eval "$(_SFS_COMPLETE=bash_source sfs)"`, ...)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = str(Path(sys.executable).parent)


def shell(name: str, script: str) -> list[str]:
    if shutil.which(name) is None:
        pytest.skip(f"{name} is not installed (scripts/test installs it as root)")
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    env = {k: v for k, v in env.items() if not k.startswith("SFS_")}
    done = subprocess.run([name, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, f"{name} said:\n{done.stderr}"
    return done.stdout.splitlines()


def bash_complete(*words: str) -> list[str]:
    """What bash offers after ``sfs WORDS`` (the last word is the one being typed)."""
    return shell("bash", _completing(*words))


def _completing(*words: str) -> str:
    quoted = " ".join(f"'{w}'" for w in ("sfs", *words))
    return (
        f'eval "$(_SFS_COMPLETE=bash_source sfs)"; COMP_WORDS=({quoted}); '
        f'COMP_CWORD={len(words)}; _sfs_completion sfs; printf "%s\\n" "${{COMPREPLY[@]}}"'
    )


def test_bash_completes_commands_options_and_choices(tmp_path: Path) -> None:
    assert bash_complete("se") == ["send", "serve"]
    assert bash_complete("") == [
        "check", "config", "pair", "pairs", "peers", "receive", "send", "serve"
    ]  # fmt: skip
    assert "--transport" in bash_complete("send", "--tr")
    assert bash_complete("send", "--transport", "") == ["auto", "tcp", "datachannel"]
    assert "--chunk-size" in bash_complete("send", "--")


def test_bash_completes_paired_devices_names(tmp_path: Path) -> None:
    from sfs.pairs import Pair, PairStore

    PairStore(tmp_path / "sfs" / "pairs.json").add(Pair("phone", os.urandom(32), time.time()))
    data = f"XDG_DATA_HOME='{tmp_path}'; export XDG_DATA_HOME; "
    assert shell("bash", data + _completing("send", "@")) == ["@phone"]
    assert shell("bash", data + _completing("pairs", "--remove", "p")) == ["phone"]
    assert shell("bash", data + _completing("receive", "--yes-from", "")) == ["phone"]


def test_fish_completes_with_descriptions() -> None:
    lines = shell(
        "fish",
        "eval (env _SFS_COMPLETE=fish_source sfs | string collect); "
        'complete -C "sfs rec"; complete -C "sfs serve --max-lookups-per-a"',
    )
    assert lines[0].startswith("receive\tPrint a one-time code")
    assert lines[1].startswith("--max-lookups-per-address\t")


def test_zsh_registers_the_completion() -> None:
    # zsh completes only inside its line editor; what a script can check is that the
    # function README's line installs is there and registered for `sfs`.
    lines = shell(
        "zsh",
        'autoload -U compinit; compinit -u -D; eval "$(_SFS_COMPLETE=zsh_source sfs)"; '
        "print -r -- $_comps[sfs]",
    )
    assert lines == ["_sfs_completion"]


def test_the_entry_point_answers_for_zsh() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFS_")}
    env.update(_SFS_COMPLETE="zsh_complete", COMP_WORDS="sfs receive --tr", COMP_CWORD="2")
    done = subprocess.run(
        [sys.executable, "-m", "sfs"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["plain", "--transport"]


def interactive(name: str, argv: list[str], setup: str, typed: str, want: str, cwd: Path) -> str:
    """Type ``typed`` and a Tab into a real interactive shell on a pty, after ``setup``;
    return what the shell echoed once ``want`` shows up (or fail with all it showed)."""
    if shutil.which(name) is None:
        pytest.skip(f"{name} is not installed (scripts/test installs it as root)")
    import pty
    import select

    env = {k: v for k, v in os.environ.items() if not k.startswith("SFS_")}
    env.update(PATH=BIN + os.pathsep + env.get("PATH", ""), TERM="dumb", HOME=str(cwd))
    pid, fd = pty.fork()
    if pid == 0:  # the child: the shell itself
        os.chdir(cwd)
        os.execvpe(name, [name, *argv], env)
    seen = b""
    try:
        os.write(fd, setup.encode() + b"\n")
        os.write(fd, typed.encode() + b"\t")
        deadline = time.monotonic() + 20
        while want.encode() not in seen.split(b"READY", 1)[-1]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{name} never showed {want!r}; it showed:\n{seen!r}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break
        return seen.decode("utf-8", "replace")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


@pytest.mark.parametrize(
    ("typed", "completed"),
    [
        ("sfs send ABC-123-tiger-lamp rep", "sfs send ABC-123-tiger-lamp report.pdf"),
        ("sfs send rep", "sfs send report.pdf"),
        ("sfs receive --output Down", "sfs receive --output Downloads/"),
    ],
)
def test_bash_completes_files_and_folders_on_a_real_terminal(
    tmp_path: Path, typed: str, completed: str
) -> None:
    """click hands file and folder arguments to the shell's own completion
    (`compopt -o default` / `-o dirnames`): bash itself lists them."""
    (tmp_path / "report.pdf").write_bytes(b"x")
    (tmp_path / "Downloads").mkdir()
    interactive(
        "bash",
        ["--norc", "--noprofile", "-i"],
        'eval "$(_SFS_COMPLETE=bash_source sfs)"; echo READ""Y',
        typed,
        completed,
        tmp_path,
    )


def test_zsh_completes_a_file_to_send_on_a_real_terminal(tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_bytes(b"x")
    interactive(
        "zsh",
        ["-f", "-i"],
        'autoload -U compinit; compinit -u -D; eval "$(_SFS_COMPLETE=zsh_source sfs)"; '
        'echo READ""Y',
        "sfs send ABC-123-tiger-lamp rep",
        "report.pdf",
        tmp_path,
    )


def test_fish_completes_a_file_to_send(tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_bytes(b"x")
    lines = shell(
        "fish",
        f"cd {tmp_path}; eval (env _SFS_COMPLETE=fish_source sfs | string collect); "
        'complete -C "sfs send ABC-123-tiger-lamp rep"; complete -C "sfs send rep"',
    )
    assert lines == ["report.pdf", "report.pdf"], lines
