"""ICE gathering: which host addresses aiortc may use, every STUN and TURN server at
once (aioice's own candidate functions), and what route a pair of candidates took.

The only module that reaches into aioice; the shape checks below say what it relies
on.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import ipaddress
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aioice.candidate
import aioice.ice
import aioice.stun
from aiortc import (
    RTCIceServer,
)
from aiortc.rtcicetransport import parse_stun_turn_uri

from sfs.errors import (
    PeerConnectionError,
)
from sfs.peer.transport.channel import Route
from sfs.signal.messages import IceServer

logger = logging.getLogger(__name__)


# -- restricting host candidates ----------------------------------------------------------

_host_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "sfs_host_addresses", default=None
)
_original_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _host_addresses.get()
    if chosen is None:
        return list(_original_get_host_addresses(use_ipv4, use_ipv6))
    return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


# -- what sfs relies on inside aioice and aiortc -----------------------------------------
#
# sfs replaces a module function of aioice, reads aioice's candidate lists, and replaces
# two methods on each aiortc SCTP transport.  pyproject.toml bounds both packages to
# the versions tested; these checks are for an install outside those bounds: what
# does not have the expected shape is not patched (aiortc's own behaviour stays, with
# one warning), or is refused with a clear error, never patched blindly.  The tests
# in tests/unit/test_dependency_shapes.py assert the same shapes.


def names_used(function: Any) -> frozenset[str]:
    """The global and attribute names ``function``'s code uses (``self._x`` -> ``_x``)."""
    code = getattr(function, "__code__", None)
    return frozenset(code.co_names) if code is not None else frozenset()


def parameters_of(function: Any) -> list[str] | None:
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None


def aioice_problem(ice: Any = aioice.ice) -> str | None:
    """What of aioice's insides that sfs uses is not as expected; None if all is."""
    if parameters_of(getattr(ice, "get_host_addresses", None)) != ["use_ipv4", "use_ipv6"]:
        return "aioice.ice.get_host_addresses(use_ipv4, use_ipv6) is not there"
    connection = getattr(ice, "Connection", None)
    if "get_host_addresses" not in names_used(getattr(connection, "gather_candidates", None)):
        return "Connection.gather_candidates no longer asks get_host_addresses"
    missing = _CONNECTION_ATTRIBUTES - names_used(getattr(connection, "__init__", None))
    if missing:
        return f"Connection has no {', '.join(sorted(missing))}"
    for name in ("server_reflexive_candidate", "relayed_candidate", "StunProtocol"):
        if not callable(getattr(ice, name, None)):
            return f"aioice.ice.{name} is not there"
    return None


_CONNECTION_ATTRIBUTES = frozenset({"_protocols", "_components", "_local_candidates", "_nominated"})
AIOICE_PROBLEM = aioice_problem()
if AIOICE_PROBLEM is None:
    # aioice has no option for this; it asks this module-level function during
    # gathering. The context variable keeps the choice per task, so two connections in
    # one process (as in the tests) can use different address sets.
    aioice.ice.get_host_addresses = _get_host_addresses


def aioice_unusable() -> PeerConnectionError:
    return PeerConnectionError(
        f"this aioice ({getattr(aioice, '__version__', '?')}) is not one sfs works with "
        f"({AIOICE_PROBLEM}); install the version pyproject.toml asks for"
    )


@contextmanager
def gathering_on(addresses: tuple[str, ...]) -> Iterator[None]:
    if addresses and AIOICE_PROBLEM is not None:
        raise aioice_unusable()
    token = _host_addresses.set(addresses or None)
    try:
        yield
    finally:
        _host_addresses.reset(token)


def host_addresses(chosen: tuple[str, ...]) -> tuple[str, ...]:
    """The addresses to offer a peer: ``--ice-address`` if given, else every address
    of this machine that ICE would offer (no loopback, no link-local IPv6)."""
    return chosen or tuple(_original_get_host_addresses(use_ipv4=True, use_ipv6=True))


def to_rtc_ice_servers(servers: Sequence[IceServer]) -> list[Any]:
    return [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
        for s in servers
    ]


# -- gathering ----------------------------------------------------------------------------------
#
# aiortc hands aioice one STUN and one TURN server (the first of each), and aioice waits
# up to 5 s for them: with two TURN URLs (UDP and TCP) only the UDP one was tried, so a
# network that blocks UDP got no relay, and its gathering always took the full 5 s.
# sfs gives aiortc no STUN/TURN server at all (host candidates only) and gathers the
# rest itself, here and only here, with aioice's own candidate functions: every STUN
# and TURN URL at once, done when all answered, GATHER_SECONDS at most, and only
# RELAY_GRACE_SECONDS more for the others once a relay is in hand.  This touches
# aioice internals (the connection's candidate and protocol lists); the tests in
# tests/integration/test_nat_matrix.py are what prove it still works.

#: The longest gathering may take (STUN and TURN answer within a round trip or two).
GATHER_SECONDS = 3.0
#: Once a relay candidate is in, how long the rest may still take: a STUN answer
#: that is later than a whole TURN allocation is most likely not coming (UDP blocked).
RELAY_GRACE_SECONDS = 0.5


@dataclass(frozen=True)
class IceUrl:
    """One STUN or TURN URL with what aioice needs for it."""

    kind: str  # "stun" or "turn"
    host: str
    port: int
    transport: str = "udp"
    tls: bool = False
    username: str | None = None
    password: str | None = None


def ice_urls(servers: Sequence[IceServer]) -> list[IceUrl]:
    """Every URL of ``servers`` that aioice can use (aiortc's own parser)."""
    urls = []
    for server in servers:
        for url in server.urls:
            try:
                parsed = parse_stun_turn_uri(url)
            except ValueError:
                logger.debug("skipping an ICE URL aiortc cannot parse: %s", url)
                continue
            if parsed["scheme"] == "stun":
                urls.append(IceUrl("stun", parsed["host"], parsed["port"]))
            elif parsed["scheme"] in ("turn", "turns") and parsed["transport"] in ("udp", "tcp"):
                if parsed["scheme"] == "turns" and parsed["transport"] != "tcp":
                    continue
                urls.append(
                    IceUrl(
                        "turn",
                        parsed["host"],
                        parsed["port"],
                        parsed["transport"],
                        parsed["scheme"] == "turns",
                        server.username,
                        server.credential,
                    )
                )
    return urls


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class PairEnd:
    """What is known of one end of the nominated candidate pair."""

    type: str  # "host", "srflx", "prflx" or "relay"
    address: str  # an IP address, or a browser's mDNS name (``….local``), or ""


def route_of(
    local: PairEnd,
    remote: PairEnd,
    *,
    networks: Sequence[Network],
    behind_nat: bool,
    our_relay: str = "",
) -> Route:
    """How the data flows, from what is known of both candidates (pure).

    :param networks: the networks of this machine's interfaces (address and prefix).
    :param behind_nat: a STUN server saw this machine at an address not its own.
    :param our_relay: how to name our TURN relay, when the local end is one.

    First match wins:

    ====================  ===========================================  ==========
    local                 remote                                       route
    ====================  ===========================================  ==========
    relay                 any                                          relay (ours)
    any                   relay                                        relay (theirs)
    any                   an address on one of our networks, or an     local
                          mDNS name (mDNS answers on the link only)
    srflx / prflx         any                                          nat
    any                   srflx (the peer's address as its NAT maps)   nat
    any, behind a NAT     any                                          nat
    any                   any (host or prflx elsewhere: routed, a      direct
                          VPN, or a NAT we cannot see)
    ====================  ===========================================  ==========

    A peer-reflexive remote is an address learnt from the peer's own checks: a
    NAT's, or a host address the peer did not signal (a browser hides its host
    addresses behind mDNS names), so only where it is says anything.  When
    nothing is known, the route is "direct", never a guess.
    """
    if local.type == "relay":
        return Route("relay", our_relay or local.address)
    if remote.type == "relay":
        return Route("relay", remote.address)
    if remote.address.lower().endswith(".local") or _on(remote.address, networks):
        return Route("local")
    if local.type in ("srflx", "prflx") or remote.type == "srflx" or behind_nat:
        return Route("nat")
    return Route("direct")


def _on(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


def local_networks() -> tuple[Network, ...]:
    """The networks of this machine's interfaces, loopback and link-local included
    (a peer there is on the same link)."""
    import ifaddr

    networks: list[Network] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                networks.append(
                    ipaddress.ip_network(f"{address.split('%')[0]}/{ip.network_prefix}", False)
                )
            except ValueError:
                continue
    return tuple(networks)


#: The STUN error codes of a TURN server that refuses the credential (RFC 8489 14.8).
REFUSED_CREDENTIAL_CODES = frozenset({401, 431, 441})


async def gather_from_servers(
    connection: Any, urls: Sequence[IceUrl], relays: dict[int, str], refused: set[str]
) -> None:
    """Add server-reflexive and relay candidates to aioice ``connection``, whose host
    candidates are gathered; ``relays`` learns which TURN server each relay is on,
    ``refused`` which TURN servers refused the credential."""
    hosts = [p for p in connection._protocols if p.local_candidate.type == "host"]
    tasks: list[asyncio.Task[Any]] = []
    for url in urls:
        if url.kind == "stun":
            for protocol in hosts:
                if ipaddress.ip_address(protocol.local_candidate.host).version == 4:
                    tasks.append(
                        asyncio.ensure_future(
                            aioice.ice.server_reflexive_candidate(protocol, (url.host, url.port))
                        )
                    )
        else:
            for component in connection._components:
                task = asyncio.ensure_future(_relay(connection, component, url))
                relays[id(task)] = f"{url.host} ({url.transport})"
                tasks.append(task)
    if not tasks:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GATHER_SECONDS
    pending = set(tasks)
    try:
        while pending and (left := deadline - loop.time()) > 0:
            done, pending = await asyncio.wait(
                pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task.cancelled() or task.exception() is not None:
                    error = task.exception()
                    logger.debug("an ICE server did not answer: %s", error)
                    if isinstance(error, aioice.stun.TransactionFailed):
                        code = error.response.attributes.get("ERROR-CODE", (0, ""))[0]
                        if code in REFUSED_CREDENTIAL_CODES and id(task) in relays:
                            refused.add(relays[id(task)].split(" ")[0])
                    continue
                candidate, protocol = task.result()
                connection._local_candidates.append(candidate)
                if protocol is not None:
                    connection._protocols.append(protocol)
                    relays[id(protocol)] = relays.pop(id(task))
                    deadline = min(deadline, loop.time() + RELAY_GRACE_SECONDS)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


#: Local preference of a relay reached over TCP (RFC 8445 5.1.2.1): below UDP's 65535,
#: so when both relays work the UDP one carries the data (no head-of-line blocking
#: under SCTP's own retransmissions); TCP is for networks where nothing else works.
TCP_RELAY_PREFERENCE = 32767


async def _relay(connection: Any, component: int, url: IceUrl) -> tuple[Any, Any]:
    candidate, protocol = await _allocate_relay(connection, component, url)
    if url.transport == "tcp":
        candidate.priority = aioice.candidate.candidate_priority(
            component, "relay", local_pref=TCP_RELAY_PREFERENCE
        )
    return candidate, protocol


async def _allocate_relay(connection: Any, component: int, url: IceUrl) -> tuple[Any, Any]:
    return await aioice.ice.relayed_candidate(
        component=component,
        hide_related_address=False,
        protocol_factory=lambda: aioice.ice.StunProtocol(connection),
        turn_server=(url.host, url.port),
        turn_username=url.username,
        turn_password=url.password,
        turn_ssl=url.tls,
        turn_transport=url.transport,
    )
