"""`sfs check` behind the NATs of the NAT lab (tests/integration/nat.py), with a real
coturn listening on two addresses (two STUN servers) and a real `sfs serve`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, sfs_command
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
    """`sfs serve` with coturn's two STUN addresses and its TURN over UDP and TCP."""
    return nat_server(lab, tmp, *turn_args(secret_file), "--stun", f"stun:{SECOND_PUB_IP}:3478")


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
    assert line(lines, "server ").startswith("ok ") and "no TLS" in line(lines, "server ")
    for stun in (PUB_IP, SECOND_PUB_IP):
        seen = line(lines, f"STUN {stun}:3478")
        assert seen.startswith("ok ") and "seen as 10.200.0.11:" in seen, lines
        assert "(local 192.168.101.10:" in seen, lines
    nat = line(lines, "NAT")
    if mode == "cone":
        assert nat.startswith("ok ") and "one public address for every destination" in nat
    else:
        assert nat.startswith("FAIL") and "symmetric" in nat
    for transport in ("udp", "tcp"):
        relay = line(lines, f"TURN {PUB_IP}:3478 ({transport})")
        assert relay.startswith("ok ") and f"relay allocated at {PUB_IP}:" in relay, lines
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
    assert code == 1, lines
    for transport in ("udp", "tcp"):
        relay = line(lines, f"TURN {PUB_IP}:3478 ({transport})")
        assert relay.startswith("FAIL") and "refused the credential" in relay, lines
    assert lines[-1].startswith("Transfers possible: not with everyone"), lines


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
