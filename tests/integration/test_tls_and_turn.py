"""`sfs serve` for the internet: TLS for the signaling connection (a CA and
certificates made here), and short-lived TURN credentials from a shared secret."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import (
    ServerProcess,
    peer_env,
    sfs_command,
    sha256_file,
    start_server,
    stop_process,
)
from tests.integration.peers import make_file, run_sender, start_receiver
from tests.integration.sio_client import QueueingClient

TURN_URLS = ("turn:turn.example:3478?transport=udp", "turn:turn.example:3478?transport=tcp")
SECRET = "correct-horse-battery"


# -- a CA and certificates ------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and one for another name, signed by
    it, and a self-signed one for 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("sfs test CA"))
        .issuer_name(_name("sfs test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": folder / "ca.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(name: str, san: x509.GeneralName, signer: Any, issuer: x509.Name) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .sign(signer or key, hashes.SHA256())
        )
        paths[f"{name}.pem"] = folder / f"{name}.pem"
        paths[f"{name}.key"] = folder / f"{name}.key"
        paths[f"{name}.pem"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(paths[f"{name}.key"], key)

    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    leaf("server", loopback, ca_key, ca.subject)
    leaf("other", x509.DNSName("other.example"), ca_key, ca.subject)
    leaf("selfsigned", loopback, None, _name("selfsigned"))
    return paths


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_server(tmp: Path, pki: dict[str, Path], cert: str) -> ServerProcess:
    return start_server(
        tmp, "--tls-cert", str(pki[f"{cert}.pem"]), "--tls-key", str(pki[f"{cert}.key"])
    )


# -- TLS ------------------------------------------------------------------------------------


def test_a_transfer_over_https_with_a_private_ca(tmp_path: Path, pki: dict[str, Path]) -> None:
    server = tls_server(tmp_path, pki, "server")
    try:
        assert server.url.startswith("https://127.0.0.1:")
        src = make_file(tmp_path / "f.bin", 300_000)
        receiver = start_receiver(server, tmp_path / "out", "--yes", "--cacert", str(pki["ca"]))
        sent = run_sender(server, "--cacert", str(pki["ca"]), receiver.code, str(src))
        received = receiver.finish()
        assert sent.returncode == 0, sent.stderr
        assert received.returncode == 0, received.stderr
        assert sha256_file(tmp_path / "out" / "f.bin") == sha256_file(src)
        assert f"Connecting via {server.url}…" in sent.stderr
    finally:
        stop_process(server.process)


def run_client(
    server_url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sfs_command("send", "--connect-timeout", "5", *args, "ABC-123-able-acid", __file__),
        capture_output=True, text=True, timeout=60, env=env or peer_env(server_url),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("cert", "ca", "reason"),
    [
        ("server", None, "unable to get local issuer certificate"),
        ("selfsigned", "ca", "self-signed certificate"),
        ("other", "ca", "IP address mismatch"),
    ],
)
def test_a_certificate_that_does_not_verify_is_exit_3(
    tmp_path: Path, pki: dict[str, Path], cert: str, ca: str | None, reason: str
) -> None:
    server = tls_server(tmp_path, pki, cert)
    try:
        env = peer_env(server.url)
        env.pop("SFS_CA_BUNDLE", None)
        if ca is not None:
            env["SFS_CA_BUNDLE"] = str(pki[ca])  # the environment variable works too
        done = run_client(server.url, env=env)
        assert done.returncode == 3, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
        assert len(lines) == 1, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert "has a certificate this machine does not trust" in lines[0]
        assert reason in lines[0], lines[0]
        assert "--cacert" in lines[0], lines[0]
    finally:
        stop_process(server.process)


def test_plain_http_to_a_tls_server_is_exit_3(tmp_path: Path, pki: dict[str, Path]) -> None:
    server = tls_server(tmp_path, pki, "server")
    try:
        done = run_client(server.url.replace("https://", "http://"))
        assert done.returncode == 3, done.stderr
        assert "cannot reach the signaling server" in done.stderr
    finally:
        stop_process(server.process)


def test_unusable_tls_files_are_a_usage_error(tmp_path: Path, pki: dict[str, Path]) -> None:
    for args in (
        ("--tls-cert", str(pki["server.pem"])),
        ("--tls-cert", str(pki["server.pem"]), "--tls-key", str(pki["other.key"])),
        ("--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(pki["server.key"])),
    ):
        done = subprocess.run(
            sfs_command("serve", "--host", "127.0.0.1", "--port", "0", *args),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr


# -- TURN credentials -----------------------------------------------------------------------


async def _registered_ice(url: str) -> list[dict[str, Any]]:
    client = QueueingClient(url)
    await client.open()
    try:
        ack = await client.sio.call("register_peer", {}, timeout=5)
    finally:
        await client.close()
    assert ack["ok"] is True, ack
    servers: list[dict[str, Any]] = ack["ice_servers"]
    servers.append({"peer_id": ack["peer_id"]})
    return servers


@pytest.mark.parametrize("source", ["file", "env"])
async def test_each_peer_gets_its_own_short_lived_turn_credential(
    tmp_path: Path, source: str
) -> None:
    secret_file = tmp_path / "turn.secret"
    secret_file.write_text(SECRET + "\n")
    turn_args = [arg for url in TURN_URLS for arg in ("--turn", url)]
    given = ["--turn-secret-file", str(secret_file)] if source == "file" else []
    os.environ["SFS_TURN_SECRET"] = SECRET if source == "env" else ""
    try:
        server = start_server(
            tmp_path, "-vv", "--stun", "stun:stun.example:3478", *turn_args, *given,
            "--turn-ttl", "600",
        )  # fmt: skip
    finally:
        os.environ.pop("SFS_TURN_SECRET", None)
    try:
        before = int(time.time())
        first, second = await _registered_ice(server.url), await _registered_ice(server.url)
        for servers in (first, second):
            stun, turn, who = servers
            assert stun == {
                "urls": ["stun:stun.example:3478"],
                "username": None,
                "credential": None,
            }
            assert turn["urls"] == list(TURN_URLS)
            expires, peer_id = turn["username"].split(":")
            assert peer_id == who["peer_id"]
            assert before + 600 <= int(expires) <= int(time.time()) + 600
            mac = hmac.new(SECRET.encode(), turn["username"].encode(), hashlib.sha1).digest()
            assert turn["credential"] == base64.b64encode(mac).decode()
        assert first[1]["credential"] != second[1]["credential"]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.url}/stats") as response,
        ):
            stats = await response.text()
        assert SECRET not in stats
    finally:
        stop_process(server.process)
    assert SECRET not in server.log_text()  # -vv: debug logging, every registration


def test_turn_options_are_checked(tmp_path: Path) -> None:
    secret_file = tmp_path / "turn.secret"
    secret_file.write_text(SECRET)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for args, says in (
        (("--turn", TURN_URLS[0]), "--turn needs the shared secret"),
        (("--turn", f"turn:user:{SECRET}@turn.example", "--turn-secret-file", str(secret_file)),
         "put no credentials in the URL"),
        (("--turn", TURN_URLS[0], "--turn-secret-file", str(empty)), "is empty"),
        (("--turn", "turn:bad host", "--turn-secret-file", str(secret_file)), "--turn"),
        (("--stun", "turn:turn.example"), "--stun takes stun:"),
    ):  # fmt: skip
        env = dict(os.environ)
        env.pop("SFS_TURN_SECRET", None)
        done = subprocess.run(
            sfs_command("serve", "--host", "127.0.0.1", "--port", "0", *args),
            capture_output=True, text=True, timeout=30, env=env,
        )  # fmt: skip
        assert done.returncode == 2, (args, done.stderr)
        assert says in done.stderr, done.stderr
        assert SECRET not in done.stderr


def test_sfs_check_reports_the_tls_of_the_server(tmp_path: Path, pki: dict[str, Path]) -> None:
    server = tls_server(tmp_path, pki, "server")
    try:
        env = peer_env(server.url)
        env.pop("SFS_CA_BUNDLE", None)
        trusted = subprocess.run(
            sfs_command("check", "--cacert", str(pki["ca"])),
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        untrusted = subprocess.run(
            sfs_command("check"), capture_output=True, text=True, timeout=60, env=env
        )
    finally:
        stop_process(server.process)
    first = trusted.stdout.splitlines()[0]
    assert first.startswith(f"ok    server {server.url}: reachable (TLS, certificate verified)")
    # No STUN or TURN server handed out: `warn` lines, but transfers on one network
    # work, so exit 0 (issue 23: a working server is no alarm).
    assert trusted.returncode == 0, trusted.stdout
    assert "warn  TURN: the server hands out no TURN relay" in trusted.stdout, trusted.stdout
    first = untrusted.stdout.splitlines()[0]
    assert first.startswith(f"FAIL  server {server.url}: the signaling server at"), first
    assert "certificate this machine does not trust" in first
    assert untrusted.returncode == 1
