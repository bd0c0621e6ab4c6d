"""`sfs check` behind the NATs of the NAT lab (tests/integration/nat.py), with a real
coturn listening on two addresses (two STUN servers) and a real `sfs serve`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.conftest import (
    ServerProcess,
    read_line_matching,
    sfs_command,
    start_server,
    stop_process,
)
from tests.integration.nat import (
    PUB_IP,
    SECOND_PUB_IP,
    Coturn,
    NatLab,
    coturn,
    nat_env,
    nat_lab,
    nat_server,
    turn_args,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def lab() -> Iterator[NatLab]:
    with nat_lab() as built:
        yield built


@pytest.fixture
def turn(lab: NatLab, tmp_path: Path) -> Iterator[Coturn]:
    with coturn(lab, tmp_path, second_ip=True) as started:
        yield started


def serve(lab: NatLab, tmp: Path, secret_file: Path) -> AbstractContextManager[ServerProcess]:
    """`sfs serve` with coturn's two STUN addresses and its TURN over UDP and TCP, and
    no relay of its own (these tests are about what the verdict makes of TURN)."""
    return nat_server(
        lab, tmp, *turn_args(secret_file), "--stun", f"stun:{SECOND_PUB_IP}:3478", "--no-relay"
    )


def check(lab: NatLab, server: ServerProcess) -> tuple[int, list[str]]:
    done = subprocess.run(
        sfs_command("check", netns=lab.peer1.netns),
        capture_output=True, text=True, timeout=60, env=nat_env(server),
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout.splitlines()


def line(lines: list[str], start: str) -> str:
    found = [x for x in lines if x.split(None, 1)[1].startswith(start)]
    assert len(found) == 1, lines
    return found[0]


@pytest.mark.parametrize("mode", ["cone", "symmetric"])
def test_check_tells_the_nat_and_finds_the_relays(
    lab: NatLab, turn: Coturn, tmp_path: Path, mode: str
) -> None:
    lab.set_nat(mode)  # type: ignore[arg-type]
    with serve(lab, tmp_path, turn.secret_file) as server:
        code, lines = check(lab, server)
    assert code == 0, lines
    assert line(lines, "server ").startswith("ok ")
    assert "no TLS" in line(lines, "server ")
    for stun in (PUB_IP, SECOND_PUB_IP):
        seen = line(lines, f"STUN {stun}:3478")
        assert seen.startswith("ok "), lines
        assert "seen as 10.200.0.11:" in seen, lines
        assert "(local 192.168.101.10:" in seen, lines
    nat = line(lines, "NAT")
    if mode == "cone":
        assert nat.startswith("ok ")
        assert "one public address for every destination" in nat
    else:
        assert nat.startswith("warn")
        assert "symmetric" in nat
    for transport in ("udp", "tcp"):
        relay = line(lines, f"TURN {PUB_IP}:3478 ({transport})")
        assert relay.startswith("ok "), lines
        assert f"relay allocated at {PUB_IP}:" in relay, lines
    assert lines[-1] == (
        "Transfers possible: yes: with anyone (through the TURN relay when nothing else works)"
    )


def test_check_with_udp_blocked_finds_the_tcp_relay(
    lab: NatLab, turn: Coturn, tmp_path: Path
) -> None:
    lab.block_udp()
    with serve(lab, tmp_path, turn.secret_file) as server:
        code, lines = check(lab, server)
    assert code == 0, lines
    assert line(lines, f"STUN {PUB_IP}:3478").startswith("FAIL"), lines
    assert "UDP blocked?" in line(lines, f"STUN {PUB_IP}:3478")
    assert line(lines, f"TURN {PUB_IP}:3478 (udp)").startswith("FAIL"), lines
    assert line(lines, f"TURN {PUB_IP}:3478 (tcp)").startswith("ok "), lines


def test_check_says_the_relay_refuses_a_wrong_secret(
    lab: NatLab, turn: Coturn, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not coturn's secret\n")
    with serve(lab, tmp_path, wrong) as server:
        code, lines = check(lab, server)
    assert code == 0, lines  # peers on one network, and behind most NATs, still can
    for transport in ("udp", "tcp"):
        relay = line(lines, f"TURN {PUB_IP}:3478 ({transport})")
        assert relay.startswith("FAIL"), lines
        assert "refused the credential" in relay, lines
    assert lines[-1].startswith("Transfers possible: on the same network and across most NATs")
    assert "not with everyone" in lines[-1], lines


def test_check_without_a_server(lab: NatLab, tmp_path: Path) -> None:
    done = subprocess.run(
        sfs_command("check", "--server", f"http://{PUB_IP}:9", "--connect-timeout", "3",
                    netns=lab.peer1.netns),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines()[0].startswith(f"FAIL  server http://{PUB_IP}:9: cannot reach")
    assert done.stdout.splitlines()[-1] == (
        "Transfers possible: no: the signaling server cannot be reached"
    )


# -- on one machine: a plain server, something else, nothing ------------------------------
#
# All inside a fresh namespace with only its loopback (the `netns` fixture): the name
# lookup of the .invalid host below cannot leave the machine either.


def check_on_loopback(netns: str, url: str) -> tuple[int, list[str], str]:
    done = subprocess.run(
        sfs_command("check", "--server", url, "--connect-timeout", "5", netns=netns),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout.splitlines(), done.stderr


@pytest.mark.parametrize("relay", [True, False], ids=["relay", "no-relay"])
def test_check_against_a_plain_server_says_what_works(
    netns: str, tmp_path: Path, relay: bool
) -> None:
    """`sfs serve` with no STUN and no TURN: its relay (checked by pairing two
    connections through it) reaches anyone who reaches the server; with --no-relay it
    works for peers on one network, `warn` lines say what crossing NATs would take.
    The exit status is 0 either way."""
    server = start_server(tmp_path, *(() if relay else ("--no-relay",)), netns=netns)
    try:
        code, lines, stderr = check_on_loopback(netns, server.url)
    finally:
        stop_process(server.process)
    assert code == 0, (lines, stderr, server.log_text())
    assert line(lines, "server ").startswith("ok "), lines
    assert line(lines, "STUN").startswith("warn")
    assert "sfs serve --stun" in line(lines, "STUN")
    assert line(lines, "TURN").startswith("warn")
    assert "sfs serve --turn" in line(lines, "TURN")
    assert not [x for x in lines if x.startswith("FAIL")], lines
    if relay:
        assert line(lines, "relay ").startswith("ok "), lines
        assert "pairs and relays over TCP" in line(lines, "relay "), lines
        assert lines[-1].startswith("Transfers possible: yes: with anyone who reaches"), lines
    else:
        assert line(lines, "relay").startswith("warn"), lines
        assert "--no-relay" in line(lines, "relay"), lines
        assert lines[-1].startswith("Transfers possible: on the same network only: across NATs")


def test_check_tells_a_stranger_from_nothing_listening(netns: str, tmp_path: Path) -> None:
    """A web server that is not `sfs serve`, a closed port and a name that does not
    resolve each get their own line (and exit 1: nothing can be transferred)."""
    port = 8000
    stranger = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-u", "-m", "http.server", "--bind",
         "127.0.0.1", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        read_line_matching(stranger, "Serving HTTP")
        code, lines, stderr = check_on_loopback(netns, f"http://127.0.0.1:{port}")
    finally:
        stop_process(stranger)
    assert code == 1, (lines, stderr)
    assert lines[0] == (
        f"FAIL  server http://127.0.0.1:{port}: something answers at http://127.0.0.1:{port} "
        "(HTTP 404), but it is not `sfs serve`; check --server / SFS_SERVER"
    ), lines
    assert lines[-1] == "Transfers possible: no: the signaling server cannot be reached"

    code, lines, stderr = check_on_loopback(netns, f"http://127.0.0.1:{port}")  # now closed
    assert code == 1, (lines, stderr)
    assert lines[0] == (
        f"FAIL  server http://127.0.0.1:{port}: cannot reach the signaling server at "
        f"http://127.0.0.1:{port}: nothing answers at 127.0.0.1:{port} (is `sfs serve` "
        "running? see --server / SFS_SERVER)"
    ), lines

    code, lines, stderr = check_on_loopback(netns, "http://nonexistent.invalid")
    assert code == 1, (lines, stderr)
    assert lines[0] == (
        "FAIL  server http://nonexistent.invalid: cannot reach the signaling server at "
        "http://nonexistent.invalid: the name nonexistent.invalid does not resolve "
        "(a typo in --server / SFS_SERVER?)"
    ), lines
