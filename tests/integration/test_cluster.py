"""Several `sfs serve` nodes sharing their peers through Redis (issue 15): real
processes only.

A real ``redis-server`` on a free port of 127.0.0.1 (no persistence), two real
``sfs serve --redis`` nodes, and for the load-balancer tests real nginx configured as
docs/DEPLOY.md says (TLS ends there).  Transfers are real ``sfs send`` / ``sfs receive``
processes, checked by SHA-256.  A failing test shows the nodes' logs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sfs.signal import messages as m
from sfs.signal.redis_registry import PREFIX, REDIS_TIMEOUT_SECONDS
from tests.conftest import (
    LOOPBACK,
    ServerProcess,
    peer_env,
    sfs_command,
    sha256_file,
    start_server,
    stop_process,
)
from tests.integration.cluster import Nginx, RedisServer, free_port
from tests.integration.peers import make_file, run_sender, run_sfs, start_receiver
from tests.integration.sio_client import Ack, Peer
from tests.integration.test_server_hostile import Client, non_reading_partner, read_until_closed
from tests.integration.test_tls_and_turn import make_pki

TTL_SECONDS = 2.0
# How long after a node dies its peers' partners may wait: the TTL, one sweep of
# the surviving node (1 s), and slack for a loaded machine.
NOTICE_BOUND_SECONDS = TTL_SECONDS + 1.0 + 2.0
# Recovery after Redis returns: the subscriber's longest retry pause (2 s), a request
# that was waiting on the dead connection, and slack.
RECOVERY_BOUND_SECONDS = 2.0 + REDIS_TIMEOUT_SECONDS + 6.0
# All clients here come from 127.0.0.1, as they would through a load balancer.
NODE_ARGS = (
    "--redis-ttl", str(TTL_SECONDS),
    "--max-connections", "5000",
    "--max-connections-per-address", "5000",
    "--max-lookups-per-address", "100000",
)  # fmt: skip
MIB = 1 << 20
ARTIFACTS = Path(os.environ.get("SFS_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))

pytestmark = pytest.mark.skipif(
    not RedisServer.available(), reason="redis-server is not installed (Debian redis-server)"
)


@dataclass
class Cluster:
    redis: RedisServer
    nodes: list[ServerProcess] = field(default_factory=list)

    def logs(self) -> str:
        """Every node's log and Redis's, for a failing assertion."""
        parts = [f"--- node {i + 1} log:\n{n.log_text()[-4000:]}" for i, n in enumerate(self.nodes)]
        redis_log = self.redis.log.read_text(errors="replace") if self.redis.log.exists() else ""
        return "\n".join([*parts, f"--- redis log:\n{redis_log[-2000:]}"])

    def address(self, i: int) -> str:
        """``host:port`` of node *i* (for nginx's upstream)."""
        return self.nodes[i].url.removeprefix("http://")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Redis and two `sfs serve --redis` nodes, each on a free port of 127.0.0.1."""
    cluster = Cluster(RedisServer(tmp_path / "redis").start())
    try:
        for _ in range(2):
            cluster.nodes.append(start_server(tmp_path, "--redis", cluster.redis.url, *NODE_ARGS))
        yield cluster
    finally:
        for node in cluster.nodes:
            stop_process(node.process)
        cluster.redis.stop()


def get_json(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url, timeout=10) as response:
        data: dict[str, int] = json.load(response)
        return data


def stats(node: ServerProcess) -> dict[str, int]:
    return get_json(f"{node.url}/stats")


def metric(node: ServerProcess, name: str) -> float:
    """One unlabelled sample of the node's /metrics."""
    with urllib.request.urlopen(f"{node.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, text
    return float(match.group(1))


def http_status(url: str, context: ssl.SSLContext | None = None) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    """Clients made by a test; all closed afterwards."""
    made: list[Peer] = []
    yield made
    await asyncio.gather(*(p.close() for p in made), return_exceptions=True)


async def joined(peers: list[Peer], url: str, *, register: bool = True, **kw: str) -> Peer:
    peer = Peer(**kw)
    peers.append(peer)
    await peer.connect(url)
    if register:
        await peer.register()
    return peer


async def pair(sender: Peer, receiver: Peer) -> None:
    ack = await sender.call(m.SEND_CONNECTION_REQUEST, {"peer_id": receiver.peer_id})
    assert ack["ok"], ack
    await receiver.expect(m.CONNECTION_REQUEST, {"peer_id": sender.peer_id})
    assert (await receiver.call(m.ACCEPT_CONNECTION, {"peer_id": sender.peer_id}))["ok"]
    await sender.expect(m.CONNECTION_ACCEPTED, {"peer_id": receiver.peer_id})


async def relay_both_ways(a: Peer, b: Peer) -> None:
    for src, dst in ((a, b), (b, a)):
        sealed = base64.b64encode(f"sealed by {src.peer_id}".encode()).decode()
        assert (await src.call(m.OFFER, {"peer_id": dst.peer_id, "sealed": sealed}))["ok"]
        await dst.expect(m.OFFER, {"peer_id": src.peer_id, "sealed": sealed})


def keep_artifact(name: str, text: str) -> None:
    folder = ARTIFACTS / "cluster"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


# --------------------------------------------------------------------------- a transfer


def test_a_transfer_from_a_sender_on_one_node_to_a_receiver_on_the_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    node1, node2 = cluster.nodes
    src = make_file(tmp_path / "across.bin", MIB + random.randrange(MIB))
    receiver = start_receiver(node1, tmp_path / "out", "--yes")
    try:
        # The receiver is node 1's peer, and node 2 knows it only through Redis.
        assert (stats(node1)["peers"], stats(node2)["peers"]) == (1, 0), cluster.logs()
        sent = run_sender(node2, receiver.code, str(src))
    finally:
        received = receiver.finish()
    assert sent.returncode == 0, f"{sent.stderr}\n{cluster.logs()}"
    assert received.returncode == 0, f"{received.stderr}\n{cluster.logs()}"
    assert sha256_file(tmp_path / "out" / "across.bin") == sha256_file(src)
    final = sent.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"Sent across\.bin \(.+\) in [\d.]+ s, .+/s, .+", final), sent.stdout
    keep_artifact("cross-node-transfer.txt", f"{final}\n{received.stdout.strip()}\n")
    print(final)
    for node in cluster.nodes:
        assert "Traceback" not in node.log_text(), cluster.logs()


def test_one_code_serves_receivers_on_both_nodes(cluster: Cluster, tmp_path: Path) -> None:
    """`sfs send --many 3` on node 1: receivers on node 2 and on node 1 take its code
    at once, each its own pairing held in Redis; a fourth, on node 2, is refused
    there in words while they are under way."""
    from tests.integration.peers import start_joining, wait_for_partials
    from tests.integration.test_sender_first import start_printing_sender

    node1, node2 = cluster.nodes
    src = make_file(tmp_path / "room.bin", 12 * MIB)
    sender = start_printing_sender(node1, tmp_path, "--many", "3", str(src))
    outs = [tmp_path / f"r{i}" for i in range(3)]
    receivers = [
        start_joining(node, out, sender.code, "--limit-rate", "2M")
        for node, out in zip((node2, node2, node1), outs, strict=True)
    ]
    wait_for_partials(receivers, outs)
    (tmp_path / "late").mkdir()
    late = run_sfs(
        "receive", "--yes", "-o", str(tmp_path / "late"), sender.code, env=peer_env(node2.url)
    )
    received = [r.finish() for r in receivers]
    sent = sender.finish()
    for done in received:
        assert done.returncode == 0, f"{done.stderr}\n{cluster.logs()}"
    for out in outs:
        assert sha256_file(out / "room.bin") == sha256_file(src)
    assert late.returncode == 4, late.stderr
    assert "served every receiver its sender allowed" in late.stderr, late.stderr
    assert sent.returncode == 0, f"{sent.stderr}\n{cluster.logs()}"
    assert sent.stdout.splitlines()[-1] == "Sent to 3 receivers"
    for node in cluster.nodes:
        assert "Traceback" not in node.log_text(), cluster.logs()


# --------------------------------------------------------------------------- peer IDs


async def test_500_registrations_at_once_across_two_nodes_get_500_ids(
    cluster: Cluster, peers: list[Peer]
) -> None:
    urls = [node.url for node in cluster.nodes]
    gate = asyncio.Semaphore(100)

    async def connect(i: int) -> Peer:
        async with gate:
            return await joined(peers, urls[i % 2], register=False)

    clients = await asyncio.gather(*(connect(i) for i in range(500)))
    acks = await asyncio.gather(*(c.call(m.REGISTER_PEER, {}) for c in clients))
    assert all(ack["ok"] for ack in acks), [a for a in acks if not a["ok"]][:3]
    ids = [str(ack["peer_id"]) for ack in acks]
    assert len(set(ids)) == 500
    for client, peer_id in zip(clients, ids, strict=True):
        client.peer_id = peer_id
    # Redis holds each ID once, for the node that gave it out.
    with cluster.redis.client() as redis:
        by_node = Counter(redis.hget(key, "node") for key in redis.scan_iter(f"{PREFIX}peer:*"))
    assert sorted(by_node.values()) == [250, 250], by_node
    assert [stats(node)["peers"] for node in cluster.nodes] == [250, 250]
    # And each node finds the other's peers.
    for finder, target in zip(clients[:20], clients[21:41], strict=True):
        assert (await finder.call(m.FIND_PEER, {"peer_id": target.peer_id}))["ok"]


async def test_of_senders_on_both_nodes_racing_for_one_receiver_exactly_one_wins(
    cluster: Cluster, peers: list[Peer]
) -> None:
    url1, url2 = (node.url for node in cluster.nodes)
    for _ in range(15):
        receiver = await joined(peers, url1)
        senders = [await joined(peers, url) for url in (url1, url2, url1, url2, url2, url1)]
        acks: list[Ack] = await asyncio.gather(
            *(s.call(m.SEND_CONNECTION_REQUEST, {"peer_id": receiver.peer_id}) for s in senders)
        )
        winners = [s for s, ack in zip(senders, acks, strict=True) if ack["ok"]]
        assert len(winners) == 1, acks
        assert all(a["error"] == m.BUSY for a in acks if not a["ok"]), acks
        await receiver.expect(m.CONNECTION_REQUEST, {"peer_id": winners[0].peer_id})
        await receiver.call(m.ACCEPT_CONNECTION, {"peer_id": winners[0].peer_id})
        await winners[0].expect(m.CONNECTION_ACCEPTED, {"peer_id": receiver.peer_id})
        await asyncio.sleep(0.2)
        assert receiver.events.empty(), receiver.events.get_nowait()  # nobody else got in
        for client in (receiver, *senders):
            await client.close()


async def test_a_partner_on_another_node_that_never_reads_is_dropped_there(
    cluster: Cluster,
) -> None:
    """Relays that reach a node through Redis meet the same unread budget as its own:
    the receiver on node 1 stops reading while its sender on node 2 relays 64 KiB
    offers; node 1 drops it, and the sender is told it is no longer paired."""
    node1, node2 = cluster.nodes
    sender = await Client(node2.url).connect()
    try:
        await sender.register()
        async with non_reading_partner(node1.url, sender) as (reader, peer_id):
            sealed = "A" * m.MAX_SEALED_SDP_CHARS
            acks: list[Ack] = []
            while len(acks) < 2000:  # 128 MiB: twice the budget of all clients together
                acks.append(await sender.call(m.OFFER, {"peer_id": peer_id, "sealed": sealed}))
                if not acks[-1]["ok"]:
                    break
            assert acks[-1].get("error") == m.NOT_PAIRED, (len(acks), acks[-1], cluster.logs())
            await read_until_closed(reader)
    finally:
        await sender.close()
    dropped = await asyncio.to_thread(
        metric, node1, 'sfs_dropped_connections_total{reason="unread"}'
    )
    assert dropped == 1, cluster.logs()


# --------------------------------------------------------------------------- failures


async def test_when_a_node_is_killed_its_peers_partner_on_the_other_is_told_in_time(
    cluster: Cluster, peers: list[Peer]
) -> None:
    node1, node2 = cluster.nodes
    receiver = await joined(peers, node1.url)
    sender = await joined(peers, node2.url)
    idle = await joined(peers, node2.url)
    await pair(sender, receiver)
    await relay_both_ways(sender, receiver)
    node2.process.send_signal(signal.SIGKILL)
    node2.process.wait()
    killed = time.monotonic()
    async with asyncio.timeout(NOTICE_BOUND_SECONDS):
        event = await receiver.events.get()
    waited = time.monotonic() - killed
    assert event == (m.PEER_DISCONNECTED, {"peer_id": sender.peer_id}), cluster.logs()
    print(f"the partner heard of the killed node after {waited:.2f} s (TTL {TTL_SECONDS} s)")
    assert waited >= TTL_SECONDS - 1.5  # told by the TTL, not by anything faster
    # The dead node's peers are gone from the registry, and the receiver is free.
    finder = await joined(peers, node1.url)
    await finder.expect_failure(m.FIND_PEER, {"peer_id": idle.peer_id}, m.UNKNOWN_PEER)
    await pair(finder, receiver)
    assert "Traceback" not in node1.log_text(), cluster.logs()


async def test_a_node_stopped_with_sigterm_lets_its_peers_go_at_once(
    cluster: Cluster, peers: list[Peer]
) -> None:
    """What a service manager does (a rolling restart): the node disconnects its clients
    and takes their peers out of Redis before it exits, so the partner on the other
    node is told at once, not after the TTL."""
    node1, node2 = cluster.nodes
    receiver = await joined(peers, node1.url)
    sender = await joined(peers, node2.url)
    await pair(sender, receiver)
    node2.process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    async with asyncio.timeout(NOTICE_BOUND_SECONDS):
        event = await receiver.events.get()
    waited = time.monotonic() - stopped
    assert event == (m.PEER_DISCONNECTED, {"peer_id": sender.peer_id}), cluster.logs()
    assert waited < TTL_SECONDS / 2, f"{waited:.2f} s: told by the TTL, not by the node"
    assert await asyncio.to_thread(node2.process.wait, 10) == 0, cluster.logs()
    await sender.wait_gone()
    with cluster.redis.client() as redis:
        assert [redis.hget(k, "node") for k in redis.scan_iter(f"{PREFIX}peer:*")] == [
            redis.hget(f"{PREFIX}peer:{receiver.peer_id}", "node")
        ]
    assert "Traceback" not in node2.log_text(), cluster.logs()


async def test_redis_stopped_and_restarted(
    cluster: Cluster, peers: list[Peer], tmp_path: Path
) -> None:
    node1, node2 = cluster.nodes
    before = await joined(peers, node1.url)
    cluster.redis.stop()

    # The nodes stay up and say why they refuse.
    for node in cluster.nodes:
        assert http_status(f"{node.url}/healthz") == 200
    newcomer = await joined(peers, node1.url, register=False)
    ack = await newcomer.call(m.REGISTER_PEER, {})
    assert ack["ok"] is False, ack
    assert ack["error"] == m.SERVER_FULL, ack
    assert "registry (Redis)" in ack["message"], ack
    assert await asyncio.to_thread(metric, node1, "sfs_registry_up") == 0
    # What a user sees: one line that says why, and exit 3.
    receive = await asyncio.to_thread(
        run_sfs, "receive", "--yes", "--output", str(tmp_path), env=peer_env(node2.url)
    )
    assert receive.returncode == 3, receive.stderr
    assert "cannot reach its registry (Redis)" in receive.error_line(), receive.stderr

    cluster.redis.start()  # the same port, and empty
    restarted = time.monotonic()

    async def register_until_accepted(url: str) -> Peer:
        while True:
            client = await joined(peers, url, register=False)
            ack = await client.call(m.REGISTER_PEER, {})
            if ack["ok"]:
                client.peer_id = str(ack["peer_id"])
                return client
            await client.close()
            await asyncio.sleep(0.2)

    async with asyncio.timeout(RECOVERY_BOUND_SECONDS):
        while True:  # until a node hears the other again (its subscriber is back)
            receiver = await register_until_accepted(node1.url)
            sender = await register_until_accepted(node2.url)
            ack = await sender.call(m.SEND_CONNECTION_REQUEST, {"peer_id": receiver.peer_id})
            assert ack["ok"], ack
            try:
                async with asyncio.timeout(1):
                    event = await receiver.events.get()
                break
            except TimeoutError:
                await receiver.close()
                await sender.close()
        assert event == (m.CONNECTION_REQUEST, {"peer_id": sender.peer_id})
        # Redis lost the peer that registered before: its node disconnects it.
        await before.gone.wait()
    print(f"registrations and pairing across nodes work {time.monotonic() - restarted:.2f} s "
          "after Redis restarted")  # fmt: skip
    assert (await receiver.call(m.ACCEPT_CONNECTION, {"peer_id": sender.peer_id}))["ok"]
    await sender.expect(m.CONNECTION_ACCEPTED, {"peer_id": receiver.peer_id})
    await relay_both_ways(sender, receiver)
    for node in cluster.nodes:
        log = node.log_text()
        assert node.process.poll() is None, cluster.logs()
        assert "does not answer" in log, cluster.logs()
        assert "answers again" in log, cluster.logs()
        assert "Traceback" not in log, cluster.logs()


# --------------------------------------------------------------------------- nginx


@pytest.fixture
def nginx(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[Nginx, Path]]:
    """nginx in front of both nodes, as docs/DEPLOY.md configures it, with TLS (a
    certificate for 127.0.0.1 from a CA made here); yields it and the CA file."""
    if not Nginx.available():
        pytest.skip("nginx is not installed (Debian package nginx)")
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    nginx = Nginx(
        tmp_path / "nginx",
        [cluster.address(0), cluster.address(1)],
        cert=pki["server.pem"],
        key=pki["server.key"],
    ).start()
    try:
        yield nginx, pki["ca"]
    finally:
        nginx.stop()


async def test_behind_nginx_websocket_only_needs_no_sticky_sessions(
    cluster: Cluster, nginx: tuple[Nginx, Path], peers: list[Peer]
) -> None:
    """Round robin, no stickiness: clients land on both nodes, and a receiver on one
    pairs with a sender on the other, all through nginx over TLS."""
    balancer, ca = nginx
    clients = [await joined(peers, balancer.url, ca_file=str(ca)) for _ in range(8)]
    with cluster.redis.client() as redis:
        node_of = {c.peer_id: redis.hget(f"{PREFIX}peer:{c.peer_id}", "node") for c in clients}
    on = {node: [c for c in clients if node_of[c.peer_id] == node] for node in node_of.values()}
    assert len(on) == 2, node_of
    assert all(len(group) == 4 for group in on.values()), node_of
    assert [stats(node)["connections"] for node in cluster.nodes] == [4, 4]
    first, second = on.values()
    for receiver, sender in zip(first, second, strict=True):
        await pair(sender, receiver)
        await relay_both_ways(sender, receiver)
    # Long-polling, the transport that would need sticky sessions, is refused.
    context = ssl.create_default_context(cafile=str(ca))
    polling = f"{balancer.url}/socket.io/?EIO=4&transport=polling"
    assert http_status(polling, context=context) == 400
    # Metrics are for scraping each node, not the balancer.
    assert http_status(f"{balancer.url}/metrics", context=context) == 403
    assert http_status(f"{cluster.nodes[0].url}/metrics") == 200


def test_a_transfer_through_nginx_over_tls(
    cluster: Cluster, nginx: tuple[Nginx, Path], tmp_path: Path
) -> None:
    balancer, ca = nginx
    front = ServerProcess(balancer.url, cluster.nodes[0].process, cluster.nodes[0].log)
    src = make_file(tmp_path / "balanced.bin", MIB + random.randrange(MIB))
    receiver = start_receiver(front, tmp_path / "out", "--yes", "--cacert", str(ca))
    try:
        sent = run_sender(front, "--cacert", str(ca), receiver.code, str(src))
    finally:
        received = receiver.finish()
    logs = f"{cluster.logs()}\n--- nginx:\n{balancer.error_log.read_text(errors='replace')}"
    assert sent.returncode == 0, f"{sent.stderr}\n{logs}"
    assert received.returncode == 0, f"{received.stderr}\n{logs}"
    assert sha256_file(tmp_path / "out" / "balanced.bin") == sha256_file(src)
    assert f"Connecting via {balancer.url}…" in sent.stderr
    # Round robin put the two on different nodes (nothing else connected meanwhile).
    assert [metric(node, "sfs_registrations_total") for node in cluster.nodes] == [1, 1]


# --------------------------------------------------------------------------- the relay


@pytest.fixture
def relay_nodes(tmp_path: Path) -> Iterator[tuple[Cluster, Nginx, Path]]:
    """Redis, two nodes and nginx as docs/DEPLOY.md sets up a cluster's relay: each node
    started with ``--relay-url`` naming its own path through nginx (/node/N/relay),
    which nginx passes on to that node alone.  Yields them and the CA file."""
    if not Nginx.available():
        pytest.skip("nginx is not installed (Debian package nginx)")
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    # nginx's port first: each node is told its relay URL through nginx when it starts.
    nginx = Nginx(tmp_path / "nginx", [], cert=pki["server.pem"], key=pki["server.key"])
    cluster = Cluster(RedisServer(tmp_path / "redis").start())
    try:
        for i in range(2):
            node = start_server(
                tmp_path, "--redis", cluster.redis.url, *NODE_ARGS,
                "--relay-url", nginx.relay_url(i),
            )  # fmt: skip
            cluster.nodes.append(node)
        nginx.nodes = [cluster.address(0), cluster.address(1)]
        nginx.start()
        yield cluster, nginx, pki["ca"]
    finally:
        nginx.stop()
        for node in cluster.nodes:
            stop_process(node.process)
        cluster.redis.stop()


def test_a_pair_split_across_nodes_behind_nginx_meets_at_the_receivers_relay(
    relay_nodes: tuple[Cluster, Nginx, Path], tmp_path: Path
) -> None:
    """Issue 25: a receiver registered on one node and a sender on the other, both
    ``--relay only`` (on 127.0.0.1 the direct path would win), relay through nginx over
    TLS to the relay the receiver's node named (its ``--relay-url``)."""
    cluster, balancer, ca = relay_nodes
    front = ServerProcess(balancer.url, cluster.nodes[0].process, cluster.nodes[0].log)
    src = make_file(tmp_path / "relayed.bin", 4 * MIB + random.randrange(MIB))
    receiver = start_receiver(
        front, tmp_path / "out", "--yes", "--cacert", str(ca), "--relay", "only"
    )
    try:
        registered = [metric(node, "sfs_registrations_total") for node in cluster.nodes]
        assert sorted(registered) == [0, 1], registered
        at = registered.index(1)  # the receiver's node
        sent = run_sender(front, "--cacert", str(ca), "--relay", "only", receiver.code, str(src))
    finally:
        received = receiver.finish()
    nginx_log = balancer.error_log.read_text(errors="replace")[-3000:]
    logs = f"{cluster.logs()}\n--- nginx:\n{nginx_log}"
    assert sent.returncode == 0, f"{sent.stderr}\n{logs}"
    assert received.returncode == 0, f"{received.stderr}\n{logs}"
    assert sha256_file(tmp_path / "out" / "relayed.bin") == sha256_file(src)
    # Round robin put the sender on the other node: the pair was split.
    assert [metric(node, "sfs_registrations_total") for node in cluster.nodes] == [1, 1]
    sent_line = sent.stdout.strip().splitlines()[-1]
    received_line = received.stdout.strip().splitlines()[-1]
    for final in (sent_line, received_line):
        assert final.endswith(f"relayed by {LOOPBACK}"), f"{sent.stdout}\n{received.stdout}"
    # The receiver's node carried the bytes (the file and the frames around it); the
    # sender's relayed nothing.
    relayed = [metric(node, "sfs_relay_bytes_total") for node in cluster.nodes]
    assert relayed[at] >= src.stat().st_size, (relayed, logs)
    assert relayed[1 - at] == 0, (relayed, logs)
    keep_artifact("split-pair-relayed.txt", f"{sent_line}\n{received_line}\n{relayed}\n")
    print(sent_line, received_line, relayed, sep="\n")
    for node in cluster.nodes:
        assert "Traceback" not in node.log_text(), logs


def test_the_node_carrying_a_relayed_transfer_dies_and_the_pair_meets_on_the_other(
    relay_nodes: tuple[Cluster, Nginx, Path], tmp_path: Path
) -> None:
    """Issue 28: the node whose relay carries a transfer is killed (kill -9). Both peers
    lose the connection, come back through nginx to the node that lives, meet at their
    rendezvous (in Redis) and resume through its relay; the file arrives whole."""
    cluster, balancer, ca = relay_nodes
    front = ServerProcess(balancer.url, cluster.nodes[0].process, cluster.nodes[0].log)
    src = make_file(tmp_path / "relayed.bin", 384 * MIB)
    out = tmp_path / "out"
    args = ("--cacert", str(ca), "--relay", "only")
    receiver = start_receiver(front, out, "--yes", *args)
    sender = subprocess.Popen(
        sfs_command("send", *args, receiver.code, str(src)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=peer_env(front.url),
    )  # fmt: skip
    try:
        at = [metric(node, "sfs_registrations_total") for node in cluster.nodes].index(1)
        part = out / ".relayed.bin.sfs-part"
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size > 32 * MIB):
            assert time.monotonic() < deadline, f"no 32 MiB in 60 s\n{cluster.logs()}"
            assert sender.poll() is None, sender.communicate()[1].decode()
            time.sleep(0.02)
        cluster.nodes[at].process.send_signal(signal.SIGKILL)
        cluster.nodes[at].process.wait(10)
        out_text, err_text = sender.communicate(timeout=180)
    finally:
        stop_process(sender)
        received = receiver.finish(180)
    sent_err = err_text.decode(errors="replace")
    logs = cluster.logs()
    assert sender.returncode == 0, f"{sent_err}\n{logs}"
    assert received.returncode == 0, f"{received.stderr}\n{logs}"
    assert sha256_file(out / "relayed.bin") == sha256_file(src)
    for said in (sent_err, received.stderr):
        assert "Connection lost; reconnecting" in said, said
        assert "Reconnected (relayed by" in said, said
    assert "1 reconnect" in out_text.decode(), out_text
    # The node that lives carried the rest.
    assert metric(cluster.nodes[1 - at], "sfs_relay_bytes_total") > 0, logs


def test_behind_nginx_a_node_without_relay_url_has_its_relay_refused_at_once(
    cluster: Cluster, nginx: tuple[Nginx, Path], tmp_path: Path
) -> None:
    """The nodes of the `cluster` fixture advertise their own /relay; DEPLOY.md's nginx
    does not pass /relay on as an upgrade, so the split pair is refused at once (400)
    rather than each end waiting at a different node for the 408."""
    balancer, ca = nginx
    front = ServerProcess(balancer.url, cluster.nodes[0].process, cluster.nodes[0].log)
    src = make_file(tmp_path / "stuck.bin", MIB)
    receiver = start_receiver(
        front, tmp_path / "out", "--yes", "--cacert", str(ca), "--relay", "only"
    )
    try:
        sent = run_sender(front, "--cacert", str(ca), "--relay", "only", receiver.code, str(src))
    finally:
        received = receiver.finish()
    assert sent.returncode == 8, f"{sent.stdout}\n{cluster.logs()}"
    line = sent.error_line()
    assert f"the relay at {LOOPBACK}:{balancer.port} refused" in line, sent.stderr
    assert line.endswith("send Upgrade: sfs-relay (or a WebSocket) (HTTP 400)"), sent.stderr
    # The receiver asked first (it answers, then goes to the relay) and is refused the
    # same way; what it says is not checked word for word, since the sender's abort
    # may in principle reach it first.
    assert received.returncode != 0, f"{received.stdout}\n{cluster.logs()}"
    assert "(HTTP 408)" not in received.error_line(), received.stderr
    assert not (tmp_path / "out" / "stuck.bin").exists()
    assert [metric(node, "sfs_relay_bytes_total") for node in cluster.nodes] == [0, 0]


# --------------------------------------------------------------------------- the command line


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sfs_command("serve", "--host", LOOPBACK, "--port", "0", *args),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:6379", "redis://:hunter2@127.0.0.1:notaport/0", "redis://:hunter2@/0"],
)
def test_a_malformed_redis_url_is_a_usage_error_that_hides_the_password(url: str) -> None:
    done = _serve(env={"SFS_REDIS_URL": url})
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    assert "SFS_REDIS_URL" in errors[0], done.stderr
    assert "hunter2" not in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_redis_at_start_is_one_line_and_exit_3() -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    done = _serve("--redis", f"redis://:hunter2@127.0.0.1:{port}/0")
    assert done.returncode == 3, done.stderr
    assert time.monotonic() - started < 30
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"Error: cannot reach Redis at redis://127.0.0.1:{port}/0: ")
    ), done.stderr
    assert "hunter2" not in done.stderr
    assert "Traceback" not in done.stderr
