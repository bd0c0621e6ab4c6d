"""Shared fixtures: a real `sfs serve` process, and helpers to run real peers."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.cluster import RedisServer

LOOPBACK = "127.0.0.1"
PROCESS_TIMEOUT_SECONDS = 90
#: Without a server, sfs works on the local network: it would multicast on this
#: machine's real interfaces.  Every sfs the tests start inherits a server that is
#: never there (a closed loopback port) unless the test asks for LAN mode, which
#: only runs inside namespaces the test creates (tests/integration/test_lan.py).
NO_SERVER = "http://127.0.0.1:9"
os.environ.setdefault("SFS_SERVER", NO_SERVER)
# A test run started in the background (`cmd &` in a script) inherits SIGINT ignored,
# and so would every sfs it starts: the Ctrl-C tests would press a key nobody hears.
# Python's own handler here is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def sfs_command(*args: str, netns: str | None = None) -> list[str]:
    """The command line of `sfs ARGS`, inside network namespace ``netns`` if given."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return [*prefix, sys.executable, "-m", "sfs", *args]


def peer_env(server_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["SFS_SERVER"] = server_url
    # aioice never offers 127.0.0.1 by itself; restrict host candidates to it so the
    # peers meet on loopback and no other interface is ever used by the tests.
    env["SFS_ICE_ADDRESSES"] = LOOPBACK
    env.pop("SFS_DEBUG", None)
    return env


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(
    tmp: Path,
    *extra: str,
    netns: str | None = None,
    host: str = LOOPBACK,
    nofile: tuple[int, int] | None = None,
) -> ServerProcess:
    """A real `sfs serve` on a free port of ``host``; ``nofile`` is its ``ulimit -n``
    (soft, hard)."""

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    log = tmp / f"server-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            sfs_command("serve", "--host", host, "--port", "0", *extra, netns=netns),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limit if nofile is not None else None,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(r"listening on (https?://\S+)", log.read_text(errors="replace"))
        if match:
            return ServerProcess(match.group(1), process, log)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"sfs serve did not start:\n{log.read_text(errors='replace')}")


def rss_kib(pid: int) -> int:
    """The resident memory of process ``pid``."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def sfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("server"))
    try:
        yield server
    finally:
        stop_process(server.process)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Start servers with ``serve.append(start_server(...))``; all stop afterwards."""
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        stop_process(server.process)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free port of 127.0.0.1, for the whole run."""
    if not RedisServer.available():
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


#: The registries `sfs serve` can keep its peers in; server tests run against both.
REGISTRIES = ["memory", "redis"]


@pytest.fixture(scope="module", params=REGISTRIES)
def registry_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _fresh_redis_url(kind: str, request: pytest.FixtureRequest) -> str | None:
    if kind == "memory":
        return None
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def redis_url(registry_kind: str, request: pytest.FixtureRequest) -> str | None:
    """None for the in-memory registry, else the URL of an emptied Redis."""
    return _fresh_redis_url(registry_kind, request)


@pytest.fixture
def registry_args(redis_url: str | None) -> list[str]:
    """`sfs serve` arguments for this test's registry."""
    return [] if redis_url is None else ["--redis", redis_url]


@pytest.fixture(scope="module")
def module_registry_args(registry_kind: str, request: pytest.FixtureRequest) -> list[str]:
    """`sfs serve` arguments for a server that several tests of a module share."""
    url = _fresh_redis_url(registry_kind, request)
    return [] if url is None else ["--redis", url]


def read_line_matching(
    process: subprocess.Popen[bytes], pattern: str, timeout: float = 30
) -> re.Match[str]:
    """Read the process's stdout line by line until ``pattern`` matches."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline().decode("utf-8", "replace")
            if not line:
                break
            seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        elif process.poll() is not None:
            break
    stop_process(process)
    raise AssertionError(f"no line matching {pattern!r}; stdout so far: {seen!r}")


_netns_counter = itertools.count()


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with only its own loopback, deleted afterwards.

    Traffic inside it never reaches the host's interfaces, so tests may firewall or
    cut it freely.
    """
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    name = f"sfs-test-{os.getpid()}-{next(_netns_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_netns(name: str, *command: str) -> None:
    subprocess.run(["ip", "netns", "exec", name, *command], check=True)


@contextlib.contextmanager
def tmpfs(folder: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs at ``folder/small`` (a disk that fills, or that nobody, root
    included, can write), unmounted afterwards."""
    mount_point = folder / "small"
    mount_point.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)
