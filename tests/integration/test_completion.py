"""Shell completion through click's own mechanism, in real bash, zsh and fish, as
README tells people to set it up (`eval "$(_SFS_COMPLETE=bash_source sfs)"`, ...)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
    quoted = " ".join(f"'{w}'" for w in ("sfs", *words))
    return shell(
        "bash",
        f'eval "$(_SFS_COMPLETE=bash_source sfs)"; COMP_WORDS=({quoted}); '
        f'COMP_CWORD={len(words)}; _sfs_completion sfs; printf "%s\\n" "${{COMPREPLY[@]}}"',
    )


def test_bash_completes_commands_options_and_choices(tmp_path: Path) -> None:
    assert bash_complete("se") == ["send", "serve"]
    assert bash_complete("") == ["check", "config", "peers", "receive", "send", "serve"]
    assert "--transport" in bash_complete("send", "--tr")
    assert bash_complete("send", "--transport", "") == ["auto", "tcp", "datachannel"]
    assert "--chunk-size" in bash_complete("send", "--")


def test_bash_completes_file_names_where_files_go(tmp_path: Path) -> None:
    # click hands file and folder arguments to the shell's own completion
    # (`compopt -o default`): COMPREPLY stays empty and bash lists the files.
    lines = shell(
        "bash",
        'eval "$(_SFS_COMPLETE=bash_source sfs)"; '
        f"cd {tmp_path}; COMP_WORDS=(sfs receive --output ''); COMP_CWORD=3; "
        '_sfs_completion sfs; echo "${#COMPREPLY[@]}"',
    )
    assert lines == ["0"]


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
