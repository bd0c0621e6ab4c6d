"""The mDNS record of a waiting sfs peer, and what the joining side makes of records.

Pure: no sockets, no zeroconf.  :mod:`sfs.lan.discovery` moves these over mDNS.

A waiting peer (the receiver; the sender with ``--print-code``) advertises one DNS-SD
service of type ``_sfs._tcp.local.``::

    instance  "sfs 3f9a1c._sfs._tcp.local."   unique: a random suffix
    SRV       port of its embedded signaling server, host "sfs-<suffix>.local."
    A / AAAA  its addresses (no loopback, no IPv6 link-local)
    TXT       v=2  role=receiver|sender  name=<display name>  since=<unix s>

Neither the code's ID nor anything derived from it is in the record: a neighbour who
could read the ID there could ask the waiting peer to pair and spend its one
attempt.  The joining side asks each waiting endpoint of the right role whether it
holds the ID (``POST PROBE_PATH``, a SPAKE2 run on the ID alone, see
:class:`sfs.peer.proto.crypto.IdProbe`) and runs the code's key exchange with the one
endpoint that proved it: one exchange per attempt, however many records a rogue
advertises.  Nothing in a record is trusted: the joining side validates each
field and shows text only through :func:`sfs.text.printable`.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sfs.errors import IdClaimedTwiceError, PeerBusyError, PeerNotOnLanError

SERVICE_TYPE = "_sfs._tcp.local."
#: The record format and the set-up protocol behind it; another value is skipped.
#: (Version 1 carried the code's ID in the clear.)
VERSION = "2"
ROLES = ("receiver", "sender")
#: Longest display name kept from a record (characters, after decoding).
MAX_NAME_CHARS = 64
#: Where a waiting peer's embedded server answers probes (see the module's text).
PROBE_PATH = "/sfs-lan/probe"
#: Largest probe request or answer body (three base64 fields of at most 44 chars).
MAX_PROBE_BODY_BYTES = 512
#: Where a waiting receiver's embedded server answers pair probes: "is one of my
#: paired devices here?" (sfs.peer.proto.crypto.answer_pair_probe).
PAIR_PROBE_PATH = "/sfs-lan/pair-probe"
#: Largest pair probe answer: a nonce and PAIR_PROBE_SLOTS tags, in base64.
MAX_PAIR_PROBE_BODY_BYTES = 2048
#: Addresses of one record tried (all at once: the first that answers is used).
MAX_ADDRESSES = 8
#: Records a browser keeps track of at once; more are ignored.
MAX_RECORDS = 256


@dataclass(frozen=True)
class Advert:
    """What a waiting peer says about itself.

    :param since: when it started waiting, Unix seconds on *its* clock.
    """

    role: str
    name: str
    port: int
    addresses: tuple[str, ...]
    since: int

    def properties(self) -> dict[str, str]:
        """The TXT record."""
        return {
            "v": VERSION,
            "role": self.role,
            "name": self.name[:MAX_NAME_CHARS],
            "since": str(self.since),
        }


def instance_name(*, token: str | None = None) -> str:
    """A DNS-SD instance name no other advertiser uses (a random suffix)."""
    return f"sfs {token or secrets.token_hex(3)}.{SERVICE_TYPE}"


def parse(
    properties: Mapping[bytes, bytes | None], *, port: int | None, addresses: Iterable[str]
) -> Advert | None:
    """An :class:`Advert` from what mDNS delivered, or None if it is not a usable
    sfs record (another version, a malformed field, no address to try)."""

    def text(key: bytes) -> str | None:
        value = properties.get(key)
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None

    if text(b"v") != VERSION:
        return None
    role = text(b"role")
    if role not in ROLES:
        return None
    assert role is not None
    if port is None or not 0 < port < 65536:
        return None
    usable = connectable(addresses)
    if not usable:
        return None
    name = properties.get(b"name") or b""
    since_text = text(b"since") or ""
    since = int(since_text) if since_text.isdigit() and len(since_text) <= 12 else 0
    return Advert(
        role=role,
        name=name.decode("utf-8", "replace")[:MAX_NAME_CHARS],
        port=port,
        addresses=usable,
        since=since,
    )


def connectable(addresses: Iterable[str]) -> tuple[str, ...]:
    """The addresses worth a TCP connection, IPv4 first, at most MAX_ADDRESSES.

    Loopback is left out (on another machine it would be that machine's own), and
    so are IPv6 link-local addresses (they need the interface, which a record cannot
    name for the reader), multicast and unspecified addresses.
    """
    v4: list[str] = []
    v6: list[str] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address.is_loopback or address.is_multicast or address.is_unspecified:
            continue
        if address.version == 6 and address.is_link_local:
            continue
        (v4 if address.version == 4 else v6).append(str(address))
    return tuple(dict.fromkeys(v4 + v6))[:MAX_ADDRESSES]


def signaling_url(address: str, port: int) -> str:
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


def page_urls(addresses: Sequence[str], port: int, preferred: str | None) -> tuple[str, ...]:
    """The URLs of the waiting side's page (its embedded server), the one for
    ``preferred`` first (the address of the interface with the default route: the
    network a phone on the same Wi-Fi is on), then the rest in ``addresses``' order
    (:func:`connectable`'s: IPv4 first)."""
    ordered = sorted(addresses, key=lambda address: address != preferred)
    return tuple(signaling_url(address, port) for address in ordered)


def waited(since: int, now: float) -> str:
    """How long a peer has been waiting, for ``sfs peers`` (its clock may differ:
    never less than zero)."""
    seconds = max(0, int(now) - since) if since else 0
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


# -- the joining side's verdict ---------------------------------------------------------------


@dataclass(frozen=True)
class Probed:
    """What one endpoint answered to "do you hold the ID?".

    :param instance: the endpoint's proven instance (it holds the ID), else None
    :param busy: it turned the probe away (too many connections, rate limit): it may
        hold the ID but cannot say now
    :param host: the address that answered
    """

    advert: Advert
    host: str | None = None
    instance: bytes | None = None
    busy: bool = False


def choose(probed: Sequence[Probed], *, peer_id: str, role: str) -> Probed:
    """The one endpoint to run the code's key exchange with, or the error to report.

    Two different instances that both prove the ID are two devices claiming it (the
    code leaked, or a rogue that learnt the ID from it): no key exchange with either,
    since a rogue would get a guess of the secret words.  The same instance reached
    at several records or addresses is one device (a relay changes nothing: the key
    exchange is end to end).
    """
    holders = [p for p in probed if p.instance is not None]
    instances = {p.instance for p in holders}
    if len(instances) > 1:
        raise IdClaimedTwiceError(
            f"{len(instances)} devices on this network claim ID {peer_id}: someone may be "
            "interfering; nothing was sent to either (ask for a new code)"
        )
    if holders:
        return holders[0]
    if any(p.busy for p in probed):
        raise PeerBusyError(
            f"a {role} on this network did not answer: too busy (someone may be flooding "
            "it); try again in a moment"
        )
    raise PeerNotOnLanError(
        f"no {role} with ID {peer_id} on this network (is it on the same LAN? "
        "for other networks use --server)"
    )
