"""The mDNS record of a waiting sfs peer, and what the joining side makes of records.

Pure: no sockets, no zeroconf.  :mod:`sfs.lan.discovery` moves these over mDNS.

A waiting peer (the receiver; the sender with ``--print-code``) advertises one DNS-SD
service of type ``_sfs._tcp.local.``::

    instance  "sfs KQZ-042 3f9a1c._sfs._tcp.local."   unique: a random suffix, so two
                                                       advertisers never clash
    SRV       port of its embedded signaling server, host "<instance>.local."
    A / AAAA  its addresses (no loopback, no IPv6 link-local)
    TXT       v=1  id=KQZ-042  role=receiver|sender  name=<display name>  since=<unix s>

The secret words are never in it: they are the SPAKE2 password, shown only to the
two users.  Nothing in a record is trusted: anyone on the LAN can advertise any
ID.  The joining side validates each field, shows text only through
:func:`sfs.text.printable`, and treats a record as a place to try: the handshake
with the real peer is what proves it (a rogue endpoint gets one online guess of
the code, as a malicious signaling server does).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sfs.errors import (
    CancelledByPeerError,
    CodeNotFoundError,
    CryptoError,
    PeerConnectionError,
    PeerGoneError,
    PeerNotOnLanError,
    ServerLostError,
    ServerUnreachableError,
    SfsError,
)
from sfs.signal.messages import is_peer_id

SERVICE_TYPE = "_sfs._tcp.local."
#: The record format and the set-up protocol behind it; another value is skipped.
VERSION = "1"
ROLES = ("receiver", "sender")
#: Longest display name kept from a record (characters, after decoding).
MAX_NAME_CHARS = 64
#: Records for one ID the joining side tries before giving up: a LAN flooded with
#: fake records costs a bounded number of attempts.
MAX_ATTEMPTS = 8
#: Addresses of one record tried (all at once: the first that answers is used).
MAX_ADDRESSES = 8
#: Records a browser keeps track of at once; more are ignored.
MAX_RECORDS = 256


@dataclass(frozen=True)
class Advert:
    """What a waiting peer says about itself.

    :param since: when it started waiting, Unix seconds on *its* clock.
    """

    peer_id: str
    role: str
    name: str
    port: int
    addresses: tuple[str, ...]
    since: int

    def properties(self) -> dict[str, str]:
        """The TXT record."""
        return {
            "v": VERSION,
            "id": self.peer_id,
            "role": self.role,
            "name": self.name[:MAX_NAME_CHARS],
            "since": str(self.since),
        }


def instance_name(peer_id: str, *, token: str | None = None) -> str:
    """A DNS-SD instance name no other advertiser uses (a random suffix)."""
    return f"sfs {peer_id} {token or secrets.token_hex(3)}.{SERVICE_TYPE}"


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
    peer_id, role = text(b"id"), text(b"role")
    if not is_peer_id(peer_id) or role not in ROLES:
        return None
    assert peer_id is not None and role is not None
    if port is None or not 0 < port < 65536:
        return None
    usable = connectable(addresses)
    if not usable:
        return None
    name = properties.get(b"name") or b""
    since_text = text(b"since") or ""
    since = int(since_text) if since_text.isdigit() and len(since_text) <= 12 else 0
    return Advert(
        peer_id=peer_id,
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

#: Failures that say "not here": the endpoint was not there, or did not know the ID.
_ABSENT = (ServerUnreachableError, ServerLostError, CodeNotFoundError)


def is_final(error: SfsError) -> bool:
    """Whether trying further records is pointless: the connection failing once the
    sealed answer opened can only be the real peer's (a rogue cannot seal an answer).
    A partner that left mid-way may have been a rogue: not final."""
    return isinstance(error, PeerConnectionError) and not isinstance(error, PeerGoneError)


def _weight(error: SfsError) -> int:
    if is_final(error):
        return 4
    if isinstance(error, CryptoError):  # someone held the ID: a typo, or a rogue's guess
        return 3
    if isinstance(error, CancelledByPeerError):
        return 2
    return 0 if isinstance(error, _ABSENT) else 1


def verdict(errors: Sequence[SfsError], *, peer_id: str, role: str) -> SfsError:
    """The one error to report when no record led to the peer.

    Someone holding the ID and answering beats "not found": the connection failing
    after the handshake, then a wrong code, then a cancel, then any other refusal
    (the first of each kind).  With only absences, the peer is not on this LAN.
    """
    best = max(errors, key=_weight, default=None)
    if best is not None and _weight(best) > 0:
        return best
    return PeerNotOnLanError(
        f"no {role} with ID {peer_id} on this network (is it on the same LAN? "
        "for other networks use --server)"
    )
