"""`sfs check`: what this network allows, before a transfer needs it.

Each probe is one real exchange with the servers ``sfs serve`` hands out: the
signaling server itself (and its TLS), a STUN binding from one local UDP socket to
each STUN server (the address this machine is seen as, and whether it is the same
for every server: a NAT that maps one socket to one public address lets direct
connections through; one that maps per destination does not), and a TURN allocation
with the issued credential on every TURN URL, and the server's own relay (two
connections with one fresh token must be paired and carry bytes both ways).  The
STUN and TURN protocols are aioice's; this module only asks.  :func:`verdict` is pure.

A server with no STUN and no TURN is not broken: peers on one network connect
directly without either.  So each line is ``ok`` (works), ``warn`` (works, with a
limit: nothing to cross NATs with, a NAT that maps per destination) or ``fail``
(something handed out, or the server itself, does not work), and any transfer being
possible is what ``sfs check`` exits 0 for.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import aioice.stun
import aioice.turn

from sfs.errors import SfsError
from sfs.peer.transport.gathering import IceUrl, ice_urls
from sfs.peer.transport.relay import open_relay, relay_url
from sfs.signal.client import SignalClient
from sfs.signal.messages import IceServer
from sfs.text import printable

#: How long one STUN or TURN probe may take.
PROBE_SECONDS = 3.0
#: STUN retransmissions (aioice's default of 6 would take 31 s on a UDP-blocked path).
STUN_RETRANSMISSIONS = 3


Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    """One line of the report."""

    level: Level
    what: str
    detail: str

    @property
    def ok(self) -> bool:
        """This part works (perhaps with a limit the detail says)."""
        return self.level != "fail"


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]
    possible: bool
    summary: str


class _StunSocket(asyncio.DatagramProtocol):
    """One UDP socket that sends STUN requests (aioice's transactions) and routes
    the answers back to them."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.transactions: dict[bytes, aioice.stun.Transaction] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not an asyncio.DatagramTransport subclass.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = aioice.stun.parse_message(data)
        except ValueError:
            return
        transaction = self.transactions.get(message.transaction_id)
        if transaction is not None:
            transaction.response_received(message, addr)

    def send_stun(self, message: aioice.stun.Message, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(bytes(message), addr)

    async def mapped_address(self, server: tuple[str, int]) -> tuple[str, int]:
        request = aioice.stun.Message(
            message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.REQUEST
        )
        transaction = aioice.stun.Transaction(
            request, server, self, retransmissions=STUN_RETRANSMISSIONS
        )
        self.transactions[request.transaction_id] = transaction
        try:
            response, _ = await transaction.run()
        finally:
            del self.transactions[request.transaction_id]
        host, port = response.attributes["XOR-MAPPED-ADDRESS"]
        return str(host), int(port)


def _local_address(towards: str) -> str:
    """The local address the routing table picks towards ``towards`` (no packet sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((towards, 9))
            return str(sock.getsockname()[0])
        except OSError:
            return "0.0.0.0"


async def probe_stun(urls: Sequence[IceUrl]) -> list[Finding]:
    """A binding request to every STUN server, all from one socket, then the NAT's
    mapping behaviour when two or more answered."""
    if not urls:
        return [
            Finding(
                "warn",
                "STUN",
                "the server hands out no STUN server: fine on one network; across NATs "
                "peers need one (sfs serve --stun)",
            )
        ]
    loop = asyncio.get_running_loop()
    transport, stun = await loop.create_datagram_endpoint(_StunSocket, local_addr=("0.0.0.0", 0))
    findings: list[Finding] = []
    mapped: list[tuple[str, int]] = []
    unmapped = False  # seen as its own address: no NAT on the way
    try:
        local_port = int(transport.get_extra_info("sockname")[1])

        async def ask(url: IceUrl) -> Finding:
            nonlocal unmapped
            name = f"STUN {url.host}:{url.port}"
            try:
                host = await loop.run_in_executor(None, socket.gethostbyname, url.host)
                async with asyncio.timeout(PROBE_SECONDS):
                    seen = await stun.mapped_address((host, url.port))
            except (OSError, TimeoutError, aioice.stun.TransactionError) as exc:
                return Finding("fail", name, f"no answer ({_reason(exc)}); UDP blocked?")
            local = (_local_address(host), local_port)
            mapped.append(seen)
            unmapped = unmapped or seen == local
            return Finding("ok", name, f"seen as {seen[0]}:{seen[1]} (local {local[0]}:{local[1]})")

        findings += await asyncio.gather(*(ask(url) for url in urls))
    finally:
        transport.close()
    if unmapped:
        findings.append(
            Finding("ok", "NAT", "none on the way: the STUN server sees this machine's own address")
        )
    elif len(mapped) >= 2 and len(set(mapped)) == 1:
        findings.append(
            Finding(
                "ok",
                "NAT",
                "one public address for every destination (endpoint-independent mapping): "
                "direct connections through it can work",
            )
        )
    elif len(mapped) >= 2:
        findings.append(
            Finding(
                "warn",
                "NAT",
                "a new public address per destination (symmetric): direct connections "
                "across NATs fail, a TURN relay is needed",
            )
        )
    elif mapped:
        findings.append(
            Finding("ok", "NAT", "behaviour unknown: it takes two STUN servers to tell")
        )
    return findings


async def probe_turn(urls: Sequence[IceUrl]) -> list[Finding]:
    """A TURN allocation on every TURN URL, with the credential the server issued."""
    if not urls:
        return [
            Finding(
                "warn",
                "TURN",
                "the server hands out no TURN relay: peers behind strict NATs or "
                "UDP-blocking firewalls cannot be reached (sfs serve --turn)",
            )
        ]
    return list(await asyncio.gather(*(_allocate(url) for url in urls)))


async def _allocate(url: IceUrl) -> Finding:
    name = f"TURN {url.host}:{url.port} ({url.transport}{', TLS' if url.tls else ''})"
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            transport, _ = await aioice.turn.create_turn_endpoint(
                asyncio.DatagramProtocol,
                server_addr=(url.host, url.port),
                username=url.username,
                password=url.password,
                ssl=url.tls,
                transport=url.transport,
            )
    except aioice.stun.TransactionFailed as exc:
        code = exc.response.attributes.get("ERROR-CODE", (0, ""))[0]
        if code in (401, 431, 441):
            return Finding("fail", name, "refused the credential (expired, or a wrong secret)")
        return Finding("fail", name, f"refused the allocation ({_reason(exc)})")
    except (OSError, TimeoutError, aioice.stun.TransactionError, ConnectionError) as exc:
        return Finding("fail", name, f"no answer ({_reason(exc)})")
    relayed = transport.get_extra_info("sockname")
    transport.close()
    return Finding("ok", name, f"relay allocated at {relayed[0]}:{relayed[1]}")


class _Collect(asyncio.Protocol):
    """What arrives through the relay, until ``wanted`` bytes did."""

    def __init__(self, wanted: int) -> None:
        self.data = b""
        self.wanted = wanted
        self.arrived: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.wanted and not self.arrived.done():
            self.arrived.set_result(self.data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.arrived.done():
            self.arrived.set_exception(ConnectionError("the relay closed the connection"))


async def probe_relay(server_url: str, advertised: str | None, ca_file: str | None) -> Finding:
    """Pair two connections at the server's relay under one fresh token and send a
    few bytes each way: what a relayed transfer needs."""
    url = relay_url(server_url, advertised)
    if url is None:
        return Finding(
            "warn",
            "relay",
            "the server has no relay (sfs serve --no-relay, or an older sfs): peers that "
            "reach it but not each other need a TURN relay",
        )
    name = f"relay {printable(url, 120)}"
    token, hello = os.urandom(32), os.urandom(16)
    transports: list[asyncio.BaseTransport] = []
    try:
        async with asyncio.timeout(2 * PROBE_SECONDS):
            opened = await asyncio.gather(
                *(
                    open_relay(url, token, lambda: _Collect(len(hello)), timeout=2 * PROBE_SECONDS,
                               ca_file=ca_file)
                    for _ in range(2)
                )
            )  # fmt: skip
            transports += [transport for transport, _ in opened]
            (one, first), (other, second) = opened
            one.write(hello)
            other.write(hello[::-1])
            if await second.arrived != hello or await first.arrived != hello[::-1]:
                return Finding("fail", name, "paired, but the bytes came back changed")
    except SfsError as exc:
        return Finding("fail", name, str(exc))
    except (TimeoutError, ConnectionError) as exc:
        return Finding("fail", name, f"paired, but nothing came through ({_reason(exc)})")
    finally:
        for transport in transports:
            transport.close()
    return Finding("ok", name, "pairs and relays over TCP: peers that reach the server connect")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"nothing within {PROBE_SECONDS:.0f} s"
    return str(getattr(exc, "strerror", None) or exc or type(exc).__name__)


def verdict(findings: Sequence[Finding]) -> tuple[bool, str]:
    """Whether any transfer is possible, and the line that says with whom.

    Peers on one network connect directly once the signaling server introduces
    them, so a reachable server is enough for some transfer.  Anyone (also a peer
    behind a NAT that maps per destination, or a firewall that lets only TCP out)
    takes a working TURN relay, or this machine having a public address (no NAT)
    and UDP (a STUN answer).  Across ordinary NATs, a STUN server is what it takes.
    """
    by_kind = {f.what.split(" ")[0]: f for f in findings}
    if not by_kind.get("server", Finding("fail", "server", "")).ok:
        return False, "no: the signaling server cannot be reached"
    if any(f.level == "ok" and f.what.startswith("relay ") for f in findings):
        return True, (
            "yes: with anyone who reaches the server (through its relay when nothing else works)"
        )
    if any(f.level == "ok" and f.what.startswith("TURN ") for f in findings):
        return True, "yes: with anyone (through the TURN relay when nothing else works)"
    nat = by_kind.get("NAT")
    if nat is not None and nat.ok and nat.detail.startswith("none"):
        return True, "yes: no NAT on the way and UDP works (peers can reach this machine)"
    if not any(f.level == "ok" and f.what.startswith("STUN ") for f in findings):
        return True, (
            "on the same network only: across NATs peers need a STUN server, and a TURN "
            "relay for strict NATs (see `sfs serve --stun`, `--turn`)"
        )
    return True, (
        "on the same network and across most NATs; not with everyone: no TURN relay "
        "works, so peers behind strict NATs or UDP-blocking firewalls cannot be reached "
        "(see `sfs serve --turn`)"
    )


async def check(server_url: str, *, connect_timeout: float, ca_file: str | None = None) -> Report:
    """Run every probe against ``server_url``."""
    findings: list[Finding] = []
    servers: tuple[IceServer, ...] = ()
    relay: str | None = None
    tls = server_url.lower().startswith("https://")
    try:
        async with SignalClient(
            server_url, connect_timeout=connect_timeout, ca_file=ca_file
        ) as signal:
            registration = await signal.register()
            peer_id, servers = registration.peer_id, registration.ice_servers
            relay = registration.relay
    except SfsError as exc:
        findings.append(Finding("fail", f"server {server_url}", str(exc)))
    else:
        how = "TLS, certificate verified" if tls else "no TLS"
        findings.append(
            Finding("ok", f"server {server_url}", f"reachable ({how}); it gave the ID {peer_id}")
        )
    if findings[0].ok:
        urls = ice_urls(servers)
        stun, turn, relayed = await asyncio.gather(
            probe_stun([u for u in urls if u.kind == "stun"]),
            probe_turn([u for u in urls if u.kind == "turn"]),
            probe_relay(server_url, relay, ca_file),
        )
        findings += [*stun, *turn, relayed]
    possible, summary = verdict(findings)
    return Report(tuple(findings), possible, summary)
