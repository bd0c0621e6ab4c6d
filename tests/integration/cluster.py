"""Real `redis-server` and `nginx` processes for tests of several `sfs serve` nodes.

Both come from Debian packages (scripts/test installs them) and listen on a free port
of 127.0.0.1 only.  Redis keeps nothing on disk (``--save '' --appendonly no``); nginx
runs in the foreground with a configuration, pid file, logs and temporary folders
all in the test's own folder.  The nginx configuration is the one docs/DEPLOY.md
shows: this module reads it from there, so the documented one is the tested one.  Only
the addresses change: the upstream lists the test's nodes, and the documented relay
location of node 1 (``/node/1/relay``) is repeated for each test node.

benchmarks/load.py starts its Redis with :class:`RedisServer` too.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

LOOPBACK = "127.0.0.1"
START_SECONDS = 20.0
DEPLOY_MD = Path(__file__).resolve().parents[2] / "docs" / "DEPLOY.md"
# One of DEPLOY.md's per-node relay locations: its node's number and address.
RELAY_LOCATION = re.compile(
    r" {8}location = /node/(\d+)/relay \{\n"
    r".*?proxy_pass http://([^/\s;]+)/relay;"
    r".*?\n {8}\}\n\n",
    re.S,
)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on just now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes] | None, how: signal.Signals) -> None:
    """Send *how*; SIGKILL if the process is still there 10 s later."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(how)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_for(check: object, what: str, log: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if callable(check) and check():
                return
        except (OSError, redis.RedisError):
            pass
        time.sleep(0.05)
    process.kill()
    process.wait()
    text = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise RuntimeError(f"{what} did not start; its log:\n{text}")


@dataclass
class RedisServer:
    """``redis-server`` on 127.0.0.1:*port*, started and stopped at will (on the same
    port, so that nodes find it again after a restart)."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.folder / f"redis-{self.port}.log"

    def client(self) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=5, decode_responses=True)

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server",
            "--bind", LOOPBACK,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.folder),
            "--logfile", str(self.log),
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        with self.client() as client:
            _wait_for(client.ping, "redis-server", self.log, self.process)
        return self

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it; SIGKILL if it lingers."""
        _stop(self.process, signal.SIGTERM)
        self.process = None

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

    def used_memory_bytes(self) -> int:
        with self.client() as client:
            return int(client.info("memory")["used_memory"])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


def nginx_config_block() -> str:
    """The ``http`` block of docs/DEPLOY.md's nginx configuration (the one after the
    line that says the tests use it)."""
    text = DEPLOY_MD.read_text()
    match = re.search(r"<!-- nginx-tested -->\s*```nginx\n(.*?)```", text, re.S)
    if match is None:
        raise AssertionError(f"no nginx block marked <!-- nginx-tested --> in {DEPLOY_MD}")
    return match.group(1)


@dataclass
class Nginx:
    """nginx in front of *nodes* (``host:port``), as docs/DEPLOY.md configures it,
    listening on 127.0.0.1:*port* (TLS with *cert* and *key* when given)."""

    folder: Path
    nodes: list[str]
    cert: Path | None = None
    key: Path | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str | None:
        # Debian puts it in /usr/sbin, which a user's PATH may lack.
        return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")

    @classmethod
    def available(cls) -> bool:
        return cls.binary() is not None

    @property
    def url(self) -> str:
        scheme = "https" if self.cert else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    @property
    def error_log(self) -> Path:
        return self.folder / "error.log"

    def config(self) -> str:
        """The whole nginx.conf: the per-installation main context, then DEPLOY.md's
        block with this test's addresses and files put in."""
        upstreams = "".join(f"\n        server {node};" for node in self.nodes)

        def nodes(match: re.Match[str]) -> str:
            documented = re.sub(r"\n\s*server [^\n]*;", "", match.group(0))
            return documented.replace("{", "{" + upstreams, 1)

        block = re.sub(r"upstream sfs_nodes \{.*?\}", nodes, nginx_config_block(), flags=re.S)
        block = self._relay_locations(block)
        # Only the TLS server here: drop the one that redirects port 80 to it.
        block = re.sub(r"\n    server \{\n        listen 80;.*?\n    \}\n", "\n", block, flags=re.S)
        if self.cert is not None and self.key is not None:
            block = block.replace("listen 443 ssl;", f"listen {LOOPBACK}:{self.port} ssl;")
            block = block.replace("/etc/ssl/sfs/fullchain.pem", str(self.cert))
            block = block.replace("/etc/ssl/sfs/privkey.pem", str(self.key))
        else:  # the same, in plain HTTP
            block = block.replace("listen 443 ssl;", f"listen {LOOPBACK}:{self.port};")
            block = re.sub(r"\n\s*ssl_[a-z_]+ [^\n]*;", "", block)
        temp = self.folder / "temp"
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers may read the test's files
        return (
            f"{user}worker_processes 1;\n"
            f"pid {self.folder / 'nginx.pid'};\n"
            f"error_log {self.error_log} info;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            f"    access_log {self.folder / 'access.log'};\n"
            f"    client_body_temp_path {temp / 'body'};\n"
            f"    proxy_temp_path {temp / 'proxy'};\n"
            f"    fastcgi_temp_path {temp / 'fastcgi'};\n"
            f"    uwsgi_temp_path {temp / 'uwsgi'};\n"
            f"    scgi_temp_path {temp / 'scgi'};\n"
            f"{block}"
            "}\n"
        )

    def relay_url(self, i: int) -> str:
        """The ``--relay-url`` of node *i* (from 0): its own path through nginx."""
        return f"{self.url}/node/{i + 1}/relay"

    def _relay_locations(self, block: str) -> str:
        """*block* with DEPLOY.md's per-node relay locations made one per test node:
        the first, with each node's number and address put in."""
        documented = list(RELAY_LOCATION.finditer(block))
        upstream = re.search(r"upstream sfs_nodes \{.*?\}", nginx_config_block(), re.S)
        assert upstream is not None, "DEPLOY.md's nginx block has no upstream sfs_nodes"
        assert documented, "DEPLOY.md's nginx block has no per-node relay locations"
        # The documented block is itself consistent: node N's location leads to the
        # upstream's Nth server.
        servers = re.findall(r"\n\s*server ([^\s;]+);", upstream.group(0))
        assert [(int(d.group(1)), d.group(2)) for d in documented] == [
            (n, server) for n, server in enumerate(servers, 1)
        ], "DEPLOY.md: the relay locations do not match the upstream's servers"
        template = documented[0].group(0)

        def location(n: int, address: str) -> str:
            return template.replace("/node/1/relay", f"/node/{n}/relay").replace(
                f"http://{servers[0]}/relay", f"http://{address}/relay"
            )

        # ... and its locations differ only in those, so the tested ones are the documented.
        for n, (found, server) in enumerate(zip(documented, servers, strict=True), 1):
            assert found.group(0) == location(n, server), f"DEPLOY.md: /node/{n}/relay differs"
        made = "".join(location(n, node) for n, node in enumerate(self.nodes, 1))
        start, end = documented[0].start(), documented[-1].end()
        return block[:start] + made + block[end:]

    def start(self) -> Nginx:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "temp").mkdir(exist_ok=True)
        conf = self.folder / "nginx.conf"
        conf.write_text(self.config())
        nginx = self.binary()
        assert nginx is not None
        check = subprocess.run([nginx, "-t", "-c", str(conf)], capture_output=True, text=True)
        if check.returncode != 0:
            raise AssertionError(f"nginx rejects the configuration:\n{check.stderr}")
        self.process = subprocess.Popen(
            [nginx, "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

        def listening() -> bool:
            with socket.create_connection((LOOPBACK, self.port), timeout=1):
                return True

        _wait_for(listening, "nginx", self.error_log, self.process)
        return self

    def stop(self) -> None:
        _stop(self.process, signal.SIGQUIT)  # nginx's graceful stop
        self.process = None
