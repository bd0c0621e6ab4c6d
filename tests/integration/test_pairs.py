"""Trusted devices (issue 29): real `sfs pair`, `sfs pairs`, `sfs receive` and
`sfs send @NAME` processes, each device with its own data folder (its pairs file).

Through a real `sfs serve` on 127.0.0.1, and on a LAN with no server (two network
namespaces on a bridge, mDNS between them): the devices pair once by code, then send
to each other with no code, both ways, each file checked by SHA-256. What must not
get in: a device that is not paired (its own made-up secret), one that was removed,
a wrong pairing code (exit 5, nothing stored), and a server replaying a paired
session's messages into the next one (nothing but delay).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from sfs.pairs import Pair, PairStore
from tests.conftest import (
    ServerProcess,
    peer_env,
    read_line_matching,
    sfs_command,
    sha256_file,
    start_server,
    stop_process,
)
from tests.evil_server import ReplayPairedSession, serve_evil
from tests.integration.lan import lan_env, lan_hosts
from tests.integration.peers import CODE_RE, Finished, Receiver, make_file, run_sfs

pytestmark = pytest.mark.slow

FINGERPRINT_RE = r"fingerprint ([0-9a-f]{4}(?:-[0-9a-f]{4}){3})"


@dataclass
class Device:
    """One device: its name, its data folder (its pairs file), its environment, and
    the namespace it runs in (None: this one)."""

    name: str
    home: Path
    env: dict[str, str]
    netns: str | None = None

    @property
    def pairs_file(self) -> Path:
        return self.home / "sfs" / "pairs.json"

    def run(self, *args: str, timeout: float = 60) -> Finished:
        return run_sfs(*args, env=self.env, netns=self.netns, timeout=timeout)

    def start(self, tmp: Path, *args: str) -> Receiver:
        """`sfs ARGS` that shows a code (pair, receive), the code read."""
        stderr_path = tmp / f"{self.name}-{args[0]}-{time.monotonic_ns()}.err"
        with open(stderr_path, "wb") as err:
            process = subprocess.Popen(
                sfs_command(*args, netns=self.netns),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                env=self.env,
            )
        try:
            code = read_line_matching(process, CODE_RE).group(1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nits stderr:\n{stderr_path.read_text()}") from None
        return Receiver(process, code, stderr_path, command=args[0])

    def pairs(self) -> list[dict[str, object]]:
        listed = self.run("pairs", "--json")
        assert listed.returncode == 0, listed.stderr
        pairs: list[dict[str, object]] = json.loads(listed.stdout)["pairs"]
        return pairs


def device(tmp: Path, name: str, env: dict[str, str], netns: str | None = None) -> Device:
    """A device with a data folder and a config folder of its own."""
    home = tmp / f"{name}-data"
    home.mkdir()
    config = tmp / f"{name}-config"
    config.mkdir()
    own = {"XDG_DATA_HOME": str(home), "XDG_CONFIG_HOME": str(config)}
    return Device(name, home, {**env, **own}, netns)


def pair(tmp: Path, waiting: Device, joining: Device) -> str:
    """`sfs pair --name W` on one, `sfs pair --name J CODE` on the other; both say they
    paired, with the same fingerprint, and keep the pair in a file of mode 0600."""
    shown = waiting.start(tmp, "pair", "--name", waiting.name)
    joined = joining.run("pair", "--name", joining.name, shown.code)
    waited = shown.finish(60)
    print(f"== {waiting.name}$ sfs pair --name {waiting.name}\n{waited.stdout}{waited.stderr}")
    print(f"== {joining.name}$ sfs pair --name {joining.name} CODE\n{joined.stdout}{joined.stderr}")
    assert joined.returncode == 0, joined.stderr
    assert waited.returncode == 0, waited.stderr
    assert f"Paired with {waiting.name} (fingerprint" in joined.stdout, joined.stdout
    assert f"Paired with {joining.name} (fingerprint" in waited.stdout, waited.stdout
    prints = {re.search(FINGERPRINT_RE, said.stdout).group(1) for said in (joined, waited)}  # type: ignore[union-attr]
    assert len(prints) == 1, (joined.stdout, waited.stdout)
    for one, other in ((waiting, joining), (joining, waiting)):
        assert stat.S_IMODE(one.pairs_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(one.pairs_file.parent.stat().st_mode) == 0o700
        listed = one.pairs()
        assert [p["name"] for p in listed] == [other.name], listed
        assert listed[0]["fingerprint"] in prints
    return prints.pop()


@contextmanager
def receiving(tmp: Path, on: Device, *args: str) -> Iterator[tuple[Receiver, Path]]:
    """`sfs receive -o OUT ARGS` on ``on``, waiting; stopped at the end if still there."""
    out = tmp / f"{on.name}-out-{time.monotonic_ns()}"
    out.mkdir()
    receiver = on.start(tmp, "receive", "-o", str(out), *args)
    try:
        yield receiver, out
    finally:
        stop_process(receiver.process)


def send_to_pair(tmp: Path, sender: Device, receiver: Device, *receive_args: str) -> None:
    """``sender`` sends a file to ``receiver`` by `sfs send @NAME`, no code; the file
    arrives whole, and the prompt names the sender as a paired device."""
    src = make_file(tmp / f"from-{sender.name}-{time.monotonic_ns()}.bin", 3 * 1024 * 1024 + 7)
    with receiving(tmp, receiver, *receive_args) as (waiting, out):
        sent = sender.run("send", f"@{receiver.name}", str(src))
        received = waiting.finish(60)
    # What each side said, for the record (pytest -s).
    print(f"== {sender.name}$ sfs send @{receiver.name} {src.name}\n{sent.stderr}{sent.stdout}")
    print(f"== {receiver.name}$ sfs receive {' '.join(receive_args)}\n{received.stderr}")
    assert sent.returncode == 0, f"{sent.stderr}\nreceiver:\n{received.stderr}"
    assert received.returncode == 0, received.stderr
    assert sha256_file(out / src.name) == sha256_file(src)
    assert f"from {sender.name} (paired)?" in received.stderr, received.stderr
    assert f"Connected to {receiver.name} (paired)" in sent.stderr, sent.stderr
    assert "Code:" not in sent.stdout + sent.stderr


def nothing_written(out: Path) -> None:
    assert list(out.iterdir()) == [], list(out.iterdir())


# -- through a server ---------------------------------------------------------------------


def test_pair_through_the_server_then_send_with_no_code_both_ways(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    env = peer_env(sfs_server.url)
    laptop, phone = device(tmp_path, "laptop", env), device(tmp_path, "phone", env)
    pair(tmp_path, laptop, phone)
    send_to_pair(tmp_path, phone, laptop, "--yes-from", "phone")
    send_to_pair(tmp_path, laptop, phone, "--yes")
    for one, other in ((laptop, phone), (phone, laptop)):
        (listed,) = one.pairs()
        assert listed["name"] == other.name
        assert isinstance(listed["last_seen"], float), listed


def test_an_unpaired_device_and_a_removed_one_are_refused_with_nothing_written(
    serve: list[ServerProcess], tmp_path: Path
) -> None:
    """A device with no pair of that name is told so before anything happens; one
    that made up its own secret for `laptop`, and the phone after the laptop removed
    it, find nobody at their rendezvous: exit 4, and the laptop, still waiting, wrote
    nothing. (A server of its own: the lookups that find nobody count against this
    address.)"""
    serve.append(start_server(tmp_path))
    env = {**peer_env(serve[0].url), "SFS_CONNECT_TIMEOUT": "3"}
    laptop, phone = device(tmp_path, "laptop", env), device(tmp_path, "phone", env)
    stranger = device(tmp_path, "stranger", env)
    pair(tmp_path, laptop, phone)
    src = make_file(tmp_path / "secret.bin", 100_000)

    unknown = stranger.run("send", "@laptop", str(src))
    assert unknown.returncode == 2, unknown.stderr
    assert "no paired device named 'laptop'" in unknown.stderr, unknown.stderr

    PairStore(stranger.pairs_file).add(Pair("laptop", os.urandom(32), time.time()))
    removed = laptop.run("pairs", "--remove", "phone")
    assert removed.returncode == 0, removed.stderr
    assert laptop.pairs() == []
    with receiving(tmp_path, laptop, "--yes") as (waiting, out):
        for who in (stranger, phone):
            refused = who.run("send", "@laptop", str(src))
            assert refused.returncode == 4, refused.stderr
            assert "laptop is not waiting" in refused.stderr, refused.stderr
        assert waiting.process.poll() is None, waiting.stderr_path.read_text()
        nothing_written(out)
        # The code still works, for anyone who has it.
        by_code = run_sfs("send", waiting.code, str(src), env=env)
        assert by_code.returncode == 0, by_code.stderr
        assert waiting.finish(60).returncode == 0
    assert sha256_file(out / src.name) == sha256_file(src)


def test_a_wrong_pairing_code_exits_5_and_stores_nothing(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    env = peer_env(sfs_server.url)
    laptop, phone = device(tmp_path, "laptop", env), device(tmp_path, "phone", env)
    shown = laptop.start(tmp_path, "pair", "--name", laptop.name)
    peer_id, words = shown.code.split("-", 2)[:2], shown.code.split("-", 2)[2]
    wrong = "-".join([*peer_id, "-".join(reversed(words.split("-")))])
    assert wrong != shown.code
    joined = phone.run("pair", "--name", phone.name, wrong)
    waited = shown.finish(60)
    assert joined.returncode == 5, joined.stderr
    assert waited.returncode == 5, waited.stderr
    assert "Wrong code" in joined.error_line() or "wrong code" in joined.error_line().lower()
    for one in (laptop, phone):
        assert not one.pairs_file.exists()


def test_pairing_with_a_device_that_is_not_pairing_is_refused(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """`sfs send CODE` given a code `sfs pair` shows: neither side pairs nor sends."""
    env = peer_env(sfs_server.url)
    laptop = device(tmp_path, "laptop", env)
    src = make_file(tmp_path / "f.bin", 1000)
    shown = laptop.start(tmp_path, "pair", "--name", laptop.name)
    sent = run_sfs("send", shown.code, str(src), env=env)
    if sent.returncode != 6:
        shown.stop()
        raise AssertionError(sent.stderr)
    waited = shown.finish(60)
    assert waited.returncode == 6, waited.stderr
    assert "is pairing, not transferring" in sent.error_line()
    assert "the other side is not pairing" in waited.error_line()
    assert not laptop.pairs_file.exists()


async def test_a_server_replaying_a_paired_sessions_messages_gets_no_one_in(
    tmp_path: Path,
) -> None:
    """The server keeps the SPAKE2 messages and sealed offer of one paired session and
    plays them into the next one at the same rendezvous (the same period): the fresh
    SPAKE2 gives the two sides different keys, nothing opens, the sender exits 5 and
    the receiver, still waiting, wrote nothing; once the server stops, the same pair
    gets through. Nothing but delay."""
    attack = ReplayPairedSession()
    async with serve_evil(attack) as (url, _):
        env = {**peer_env(url), "SFS_QUIC": "0"}
        laptop, phone = device(tmp_path, "laptop", env), device(tmp_path, "phone", env)
        await asyncio.to_thread(pair, tmp_path, laptop, phone)
        src = make_file(tmp_path / "f.bin", 200_000)
        for mode, expected in (("record", 0), ("replay", 5), ("idle", 0)):
            attack.mode = mode
            out = tmp_path / f"out-{mode}"
            out.mkdir()
            waiting = await asyncio.to_thread(
                laptop.start, tmp_path, "receive", "--yes-from", "phone", "-o", str(out)
            )
            try:
                sent = await asyncio.to_thread(phone.run, "send", "@laptop", str(src))
                said = f"{sent.stderr}\nreceiver:\n{waiting.stderr_path.read_text()}"
                assert sent.returncode == expected, said
                if expected:
                    assert "someone may be interfering" in sent.error_line(), said
                    await asyncio.sleep(1)
                    assert waiting.process.poll() is None, said
                    nothing_written(out)
                else:
                    done = await asyncio.to_thread(waiting.finish, 60)
                    assert done.returncode == 0, done.stderr
                    assert sha256_file(out / src.name) == sha256_file(src)
            finally:
                stop_process(waiting.process)
    assert attack.replayed > 0


def test_through_sfs_serve_between_namespaces(tmp_path: Path) -> None:
    """The issue's run: `sfs serve` on one host, the laptop and the phone on two others
    (three namespaces on a bridge), each with its own data and config folders: they
    pair once by code, then send to each other by name, verified."""
    with lan_hosts(3) as (server_host, laptop_host, phone_host):
        assert server_host.ipv4 is not None
        server = start_server(tmp_path, netns=server_host.netns, host=server_host.ipv4)
        try:
            env = {**peer_env(server.url), "SFS_ICE_ADDRESSES": ""}
            laptop = device(tmp_path, "laptop", env, laptop_host.netns)
            phone = device(tmp_path, "phone", env, phone_host.netns)
            pair(tmp_path, laptop, phone)
            send_to_pair(tmp_path, phone, laptop, "--yes-from", "phone")
            send_to_pair(tmp_path, laptop, phone, "--yes")
        finally:
            stop_process(server.process)


# -- on a LAN, no server ------------------------------------------------------------------


def test_on_the_lan_pair_then_send_with_no_code_both_ways(tmp_path: Path) -> None:
    """Two namespaces, no server anywhere: pair by code (mDNS and the embedded server),
    then each sends to the other by name, found by a pair probe only the pair can
    read; a device that does not hold the pair finds nobody."""
    with lan_hosts(2) as (laptop_host, phone_host):
        laptop = device(tmp_path, "laptop", lan_env(), laptop_host.netns)
        phone = device(tmp_path, "phone", lan_env(), phone_host.netns)
        pair(tmp_path, laptop, phone)
        send_to_pair(tmp_path, phone, laptop, "--yes-from", "phone")
        send_to_pair(tmp_path, laptop, phone, "--yes")
        # Removed on the laptop: the phone's pair probe finds nobody there.
        assert laptop.run("pairs", "--remove", "phone").returncode == 0
        src = make_file(tmp_path / "late.bin", 1000)
        with receiving(tmp_path, laptop, "--yes") as (waiting, out):
            refused = phone.run("send", "@laptop", str(src))
            assert refused.returncode == 4, refused.stderr
            assert "laptop is not waiting on this network" in refused.stderr, refused.stderr
            assert waiting.process.poll() is None
            nothing_written(out)
