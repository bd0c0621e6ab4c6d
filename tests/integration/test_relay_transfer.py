"""Transfers through the relay of `sfs serve` (issue 25): real `sfs serve`, `sfs receive`
and `sfs send` processes on 127.0.0.1, files checked by SHA-256.

On loopback the direct TCP path always works, so these tests choose the relay with
``--relay only``; the NAT matrix (test_nat_matrix.py) shows ``--relay auto`` picking
it where nothing else connects."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from tests.conftest import ServerProcess, peer_env, sfs_command, sha256_file, start_server
from tests.conftest import stop_process as stop
from tests.integration.peers import Finished, make_file, run_sender, start_receiver

MIB = 1 << 20
RELAYED = "relayed by 127.0.0.1"


def relayed_bytes(server: ServerProcess) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("sfs_relay_bytes_total "):
                return float(line.split()[1])
    raise AssertionError(f"no sfs_relay_bytes_total in /metrics\n{server.log_text()}")


def report(*finished: Finished) -> str:
    return "\n".join(
        f"--- exit {f.returncode}\nstdout:\n{f.stdout[-1500:]}\nstderr:\n{f.stderr[-3000:]}"
        for f in finished
    )


def test_relay_only_carries_a_transfer_and_both_sides_say_so(
    serve: list[ServerProcess], tmp_path: Path
) -> None:
    server = start_server(tmp_path)
    serve.append(server)
    src = make_file(tmp_path / "f.bin", 12 * MIB)
    receiver = start_receiver(server, tmp_path / "out", "--yes", "--relay", "only")
    sent = run_sender(server, "--relay", "only", "--json", receiver.code, str(src))
    received = receiver.finish()
    assert sent.returncode == received.returncode == 0, report(sent, received)
    assert sha256_file(tmp_path / "out" / "f.bin") == sha256_file(src)
    assert received.stdout.strip().splitlines()[-1].endswith(RELAYED), report(received)
    done = [json.loads(line) for line in sent.stdout.splitlines() if '"done"' in line]
    assert done, report(sent)
    assert done[-1]["route"] == RELAYED, report(sent)
    # The relay copied the transfer's sealed bytes (and little more) both ways.
    assert 12 * MIB <= relayed_bytes(server) < 13 * MIB, server.log_text()


def test_on_loopback_auto_takes_the_direct_path_and_never_joins_the_relay(
    serve: list[ServerProcess], tmp_path: Path
) -> None:
    """The relay waits RELAY_HEAD_START_SECONDS; the direct connection is chosen first,
    so the server relays nothing (a relay that joined early would show its bytes)."""
    server = start_server(tmp_path)
    serve.append(server)
    src = make_file(tmp_path / "f.bin", 4 * MIB)
    receiver = start_receiver(server, tmp_path / "out", "--yes")
    sent = run_sender(server, receiver.code, str(src))
    received = receiver.finish()
    assert sent.returncode == received.returncode == 0, report(sent, received)
    assert sent.stdout.strip().endswith("direct over TCP"), report(sent)
    assert relayed_bytes(server) == 0, server.log_text()
    assert "relay" not in server.log_text().lower(), server.log_text()


def test_relay_only_says_why_when_there_is_no_relay(
    serve: list[ServerProcess], tmp_path: Path
) -> None:
    """A server with --no-relay; a peer that takes no relay: exit 8, one line saying why."""
    bare = start_server(tmp_path, "--no-relay")
    serve.append(bare)
    sent = run_sender(bare, "--relay", "only", "--text", "hi", "AAA-000-tiger-lamp")
    assert sent.returncode == 8, report(sent)
    assert "the server offers no relay" in sent.error_line(), report(sent)

    server = start_server(tmp_path)
    serve.append(server)
    receiver = start_receiver(server, tmp_path / "out", "--yes", "--relay", "never")
    sent = run_sender(server, "--relay", "only", "--text", "hi", receiver.code)
    received = receiver.finish()
    assert sent.returncode == 8, report(sent, received)
    assert "the other side takes no relay" in sent.error_line(), report(sent)
    assert received.returncode != 0, report(sent, received)
    assert list((tmp_path / "out").iterdir()) == [], report(received)


def test_the_relay_killed_mid_transfer_ends_both_and_a_new_run_resumes(
    serve: list[ServerProcess], tmp_path: Path
) -> None:
    """`sfs serve --relay-rate` slows the pair so the kill lands mid-file; both sides
    lose the connection (exit 7) and keep the verified part; run again (a new server,
    a new code): the file resumes and arrives whole."""
    slow = start_server(tmp_path, "--relay-rate", "2M")
    serve.append(slow)
    src = make_file(tmp_path / "f.bin", 24 * MIB)
    out = tmp_path / "out"
    # The relay is the signaling server: with it dead there is no meeting again.
    receiver = start_receiver(slow, out, "--yes", "--relay", "only", "--reconnect-window", "0")
    sender = subprocess.Popen(
        sfs_command("send", "--relay", "only", "--reconnect-window", "0", receiver.code, str(src)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=peer_env(slow.url),
    )
    try:
        deadline = time.monotonic() + 30
        while sum(p.stat().st_size for p in out.iterdir() if p.is_file()) < 4 * MIB:
            assert time.monotonic() < deadline, "no 4 MiB arrived in 30 s\n" + slow.log_text()
            assert sender.poll() is None, sender.communicate()[1].decode()
            time.sleep(0.1)
        slow.process.send_signal(signal.SIGKILL)
        slow.process.wait(10)
        # Each side notices: the relay's connection ends (reset or closed).
        sender.wait(30)
        received = receiver.finish(30)
        sender_err = sender.communicate()[1].decode()
    finally:
        stop(sender)
    sent = Finished(sender.returncode, "", sender_err)
    assert sent.returncode == 7, report(sent, received)
    assert received.returncode == 7, report(sent, received)
    assert "Traceback" not in sent.stderr + received.stderr, report(sent, received)
    assert not (out / "f.bin").exists(), "a partial file at its final name"

    server = start_server(tmp_path)
    serve.append(server)
    receiver = start_receiver(server, out, "--yes", "--relay", "only")
    sent = run_sender(server, "--relay", "only", receiver.code, str(src))
    received = receiver.finish()
    assert sent.returncode == received.returncode == 0, report(sent, received)
    assert sha256_file(out / "f.bin") == sha256_file(src)
    final = received.stdout.strip().splitlines()[-1]
    assert "resumed" in final, report(received)
    assert final.endswith(RELAYED), report(received)
    # Only what was missing crossed the relay the second time.
    assert relayed_bytes(server) < 22 * MIB, report(sent, received)


SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: sfs-relay\r\n\r\n"


class EvilRelay:
    """A relay written for the test, named to the peers by a real `sfs serve
    --relay-url`: it answers 101 like sfs's and then misbehaves.

    ``cross``: it pairs connections of two *different* tokens (two sessions joined
    into one); else it pairs by token and, ``flip_at`` bytes into the sender's
    stream, flips one bit."""

    def __init__(self, *, cross: bool = False, flip_at: int | None = None) -> None:
        self.cross = cross
        self.flip_at = flip_at
        self.lonely: list[tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.pairs = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def __enter__(self) -> EvilRelay:
        self.thread.start()
        assert self.ready.wait(10), "the evil relay did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/relay"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        token = next(
            bytes.fromhex(line.split(b":", 1)[1].strip().decode())
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sfs-relay-token:")
        )
        partner = next(
            (i for i, (t, _, _) in enumerate(self.lonely) if (t != token) == self.cross), None
        )
        if partner is None:
            self.lonely.append((token, reader, writer))
            return
        _, other_reader, other_writer = self.lonely.pop(partner)
        self.pairs += 1
        switching = (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: sfs-relay\r\n\r\n"
        )
        writer.write(switching)
        other_writer.write(switching)
        await asyncio.gather(self._copy(reader, other_writer), self._copy(other_reader, writer))

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = 0
        try:
            while data := await reader.read(65536):
                if self.flip_at is not None and seen <= self.flip_at < seen + len(data):
                    i = self.flip_at - seen
                    data = data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]
                seen += len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def test_a_relay_that_changes_a_byte_fails_the_transfer_and_writes_nothing(
    serve: list[ServerProcess], tmp_path: Path
) -> None:
    """The relay sees only the proof and sealed frames: one bit flipped 1 MiB into
    the stream fails a frame's AES-GCM tag; nothing lands at the final name."""
    with EvilRelay(flip_at=MIB) as evil:
        server = start_server(tmp_path, "--relay-url", evil.url)
        serve.append(server)
        src = make_file(tmp_path / "f.bin", 4 * MIB)
        receiver = start_receiver(server, tmp_path / "out", "--yes", "--relay", "only")
        sent = run_sender(server, "--relay", "only", receiver.code, str(src))
        received = receiver.finish()
    assert evil.pairs == 1, report(sent, received)
    assert received.returncode == 12, report(sent, received)
    assert "tamper" in received.error_line() or "damaged" in received.error_line(), report(received)
    assert sent.returncode != 0, report(sent, received)
    assert not (tmp_path / "out" / "f.bin").exists()


def test_a_relay_that_joins_two_sessions_gets_nothing_through(
    serve: list[ServerProcess], tmp_path: Path
) -> None:
    """Two transfers at once through a relay that pairs each connection with one of
    the *other* session: the proof runs end to end, so no connection is proven, both
    sessions fail (with the relay named) and nothing is written."""
    with EvilRelay(cross=True) as evil:
        server = start_server(tmp_path, "--relay-url", evil.url)
        serve.append(server)
        src = make_file(tmp_path / "f.bin", 1 * MIB)
        common = ("--relay", "only", "--connect-timeout", "10")
        receivers = [start_receiver(server, tmp_path / f"out{i}", "--yes", *common) for i in (1, 2)]
        senders = [
            subprocess.Popen(
                sfs_command("send", *common, r.code, str(src)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=peer_env(server.url),
            )
            for r in receivers
        ]
        try:
            outcomes = []
            for process in senders:
                out, err = process.communicate(timeout=60)
                outcomes.append(Finished(process.returncode, out.decode(), err.decode()))
        finally:
            for process in senders:
                stop(process)
        received = [r.finish() for r in receivers]
    assert evil.pairs == 2, report(*outcomes, *received)
    for finished in (*outcomes, *received):
        assert finished.returncode != 0, report(*outcomes, *received)
    assert any("did not prove the session key" in f.stderr for f in outcomes), report(*outcomes)
    for i in (1, 2):
        assert list((tmp_path / f"out{i}").iterdir()) == []


def test_a_sender_joins_no_relay_outside_its_own_servers_host(
    serve: list[ServerProcess], tmp_path: Path
) -> None:
    """The receiver names the relay (in its sealed answer); a sender connects to it only
    on its own server's host, so whoever has the code cannot aim the sender's machine
    at another host.  Here the receiver reached the server as `localhost`, the sender as
    127.0.0.1: the sender refuses that relay (with --relay only: exit 8, saying so)."""
    server = start_server(tmp_path)
    serve.append(server)
    port = server.url.rsplit(":", 1)[1]
    elsewhere = ServerProcess(f"http://localhost:{port}", server.process, server.log)
    receiver = start_receiver(
        elsewhere, tmp_path / "out", "--yes", "--relay", "only", "--connect-timeout", "5"
    )
    sent = run_sender(server, "--relay", "only", "--text", "hi", receiver.code)
    received = receiver.finish()
    assert sent.returncode == 8, report(sent, received)
    assert "named a relay on another host than your server (localhost)" in sent.error_line()
    assert received.returncode != 0, report(sent, received)
    assert relayed_bytes(server) == 0
