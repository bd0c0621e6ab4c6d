"""`sfs --help` and `sfs --version` answer at once because they import nothing heavy.

Time itself is shown by `scripts/bench --startup`, not asserted here: what is checked
is the cause, which does not depend on how busy the machine is.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sfs import defaults
from sfs.peer.proto import crypto

#: Top-level packages that take most of a transfer's start-up.
HEAVY = {"aiortc", "aiohttp", "aioice", "av", "cryptography", "socketio", "engineio",
         "spake2", "tqdm", "zeroconf", "redis", "zstandard", "asyncio"}  # fmt: skip

PROBE = """
import json, sys
from click.testing import CliRunner
from sfs.cli import main
result = CliRunner().invoke(main, sys.argv[1:])
loaded = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"exit": result.exit_code, "output": result.output, "loaded": loaded}))
"""


def _loaded_by(*args: str) -> tuple[set[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["exit"] == 0, report["output"]
    return set(report["loaded"]), report["output"]


@pytest.mark.parametrize(
    "args",
    [
        ("--version",),
        ("--help",),
        *((name, "--help") for name in ("send", "receive", "serve", "peers", "check", "config")),
    ],
    ids=lambda args: " ".join(args),
)
def test_help_and_version_import_nothing_heavy(args: tuple[str, ...]) -> None:
    loaded, output = _loaded_by(*args)
    assert output
    assert not loaded & HEAVY, f"`sfs {' '.join(args)}` imported {sorted(loaded & HEAVY)}"


def test_version_names_the_protocols() -> None:
    _, output = _loaded_by("--version")
    assert output.startswith("sfs ")
    assert f"transfer {defaults.TRANSFER_PROTOCOL_VERSION}" in output
    assert f"set-up {defaults.SETUP_PROTOCOL_VERSION}" in output


def test_the_light_copies_agree_with_the_modules_that_use_them() -> None:
    assert defaults.FRAME_OVERHEAD_BYTES == crypto.FRAME_OVERHEAD_BYTES
    assert defaults.MAX_CHUNK_BYTES == defaults.MAX_MESSAGE_BYTES - crypto.FRAME_OVERHEAD_BYTES


#: What a transfer with a server never uses: LAN mode's mDNS and embedded server, the
#: server itself, `sfs check`; aiortc and qh3 come later, from a thread (preload_transports).
NOT_FOR_A_TRANSFER = {"zeroconf", "aiortc", "aioice", "av", "qh3", "sfs.lan.discovery",
                      "sfs.lan.embedded", "sfs.signal.server", "sfs.check"}  # fmt: skip

APP_PROBE = """
import json, sys
import sfs.app, sfs.meeting
before = set(sys.modules)
sfs.app.preload_transports(server=True)
sfs.meeting._preloading.join(60)
print(json.dumps({"before": sorted(before), "after": sorted(sys.modules)}))
"""


def test_the_transfer_path_imports_aiortc_and_qh3_in_a_thread_and_no_lan_or_server_code() -> None:
    done = subprocess.run(
        [sys.executable, "-c", APP_PROBE], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    before = set(report["before"]) | {name.split(".")[0] for name in report["before"]}
    assert not before & NOT_FOR_A_TRANSFER, sorted(before & NOT_FOR_A_TRANSFER)
    assert {"aiortc", "sfs.peer.transport.webrtc", "qh3.quic.connection"} <= set(report["after"])


EXIT_DURING_PRELOAD = """
import logging, sys
import sfs.meeting
logging.basicConfig(level=logging.DEBUG, format="%(message)s")
sfs.meeting.preload_transports(server=True)
sys.exit(13)
"""


def test_an_exit_during_the_preload_waits_for_it_instead_of_cutting_it_down() -> None:
    # A daemon thread cut down at exit inside Rust code (cryptography, qh3) aborts
    # the process (exit -6, "FATAL: exception not rethrown"): the exit must wait.
    done = subprocess.run(
        [sys.executable, "-c", EXIT_DURING_PRELOAD], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 13, done.stderr
    assert "aiortc loaded" in done.stderr, done.stderr
    assert "qh3 loaded" in done.stderr, done.stderr
