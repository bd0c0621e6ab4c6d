"""The session description each side seals into its offer or answer, sans I/O.

JSON: the first SDP as ``sdp``, any more (striping) as ``extra_sdps``, so a peer that
knows only one stream still understands it; the direct TCP addresses as ``tcp``, the
relay as ``relay``, QUIC as ``quic``, reconnection as ``reconnect`` and, in a session
of `sfs pair`, the name this side gives itself as ``pair`` (a peer that does not know
a key ignores it; docs/PROTOCOL.md, "Key agreement").  Sealing and
opening are :mod:`sfs.peer.proto.crypto`'s; what the keys mean is the handshake's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypeGuard
from urllib.parse import urlsplit

from sfs.defaults import MAX_STREAMS
from sfs.errors import SignalingError

#: The most direct TCP addresses one description may list.
MAX_TCP_ADDRESSES = 8
#: The longest relay URL taken from the other side's sealed description.
MAX_RELAY_URL_CHARS = 512
#: The ``quic`` value of a sealed description: the one QUIC carriage this sfs speaks
#: (docs/PROTOCOL.md, "QUIC on the WebRTC path"). 3: a QUIC connection on every
#: answered peer connection, the frames striped over them (2 answered one peer
#: connection only); since 2 the receiver proves itself first, on a stream it opens.
QUIC_VERSION = 3
#: The ``reconnect`` value of a sealed description: this side keeps the session for a
#: while after an outage and meets again at the rendezvous (crypto.reconnect_code).
#: A side that does not say so (the web page, an older sfs) is not waited for.
RECONNECT_VERSION = 1
#: The longest name a pairing side may give itself (``pair``).
MAX_PAIR_NAME_CHARS = 64


@dataclass(frozen=True)
class Description:
    """One side's session description(s) and what it offers besides.

    :param tcp: the addresses it listens on for the direct TCP path; None: it takes
        no part (not the same as an empty list: a side that cannot listen may dial).
    """

    sdps: tuple[str, ...]
    tcp: tuple[str, ...] | None = None
    relay: str | None = None
    quic: bool = False
    reconnect: bool = False
    #: This session pairs the two devices (`sfs pair`), and this side's name.
    pair: str | None = None


def encode_description(kind: str, description: Description) -> bytes:
    """The JSON of ``description`` for an ``offer`` or ``answer`` (``kind``)."""
    if not description.sdps:
        raise ValueError(f"an {kind} needs at least one session description")
    message: dict[str, object] = {"type": kind, "sdp": description.sdps[0]}
    if len(description.sdps) > 1:
        message["extra_sdps"] = list(description.sdps[1:])
    if description.tcp is not None:
        message["tcp"] = list(description.tcp)
    if description.relay is not None:
        message["relay"] = description.relay
    if description.quic:
        message["quic"] = QUIC_VERSION
    if description.reconnect:
        message["reconnect"] = RECONNECT_VERSION
    if description.pair is not None:
        message["pair"] = description.pair
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def decode_description(kind: str, plaintext: bytes) -> Description:
    """The description in an opened ``offer`` or ``answer``.

    :raises SignalingError: it is not one (after it opened: the other side's doing).
    """
    malformed = f"the other side sent a malformed {kind}"
    try:
        message = json.loads(plaintext)
    except ValueError as exc:
        raise SignalingError(malformed) from exc
    extra = message.get("extra_sdps", []) if isinstance(message, dict) else None
    if not isinstance(message, dict) or not isinstance(extra, list):
        raise SignalingError(malformed)
    sdps = [message.get("sdp"), *extra]
    if message.get("type") != kind or len(sdps) > MAX_STREAMS:
        raise SignalingError(malformed)
    strings = tuple(sdp for sdp in sdps if isinstance(sdp, str))
    if len(strings) != len(sdps):
        raise SignalingError(malformed)
    tcp = message.get("tcp")
    if tcp is not None and (
        not isinstance(tcp, list)
        or len(tcp) > MAX_TCP_ADDRESSES
        or not all(isinstance(a, str) and len(a) <= 64 for a in tcp)
    ):
        raise SignalingError(malformed)
    relay = message.get("relay")
    if relay is not None and not is_relay_url(relay):
        raise SignalingError(malformed)
    pair = message.get("pair")
    if pair is not None and (not isinstance(pair, str) or len(pair) > MAX_PAIR_NAME_CHARS):
        raise SignalingError(malformed)
    return Description(
        strings,
        None if tcp is None else tuple(tcp),
        relay,
        # Another version of sfs's QUIC (or reconnection) is not this one: as if none.
        quic=message.get("quic") == QUIC_VERSION,
        reconnect=message.get("reconnect") == RECONNECT_VERSION,
        pair=pair,
    )


def is_relay_url(url: object) -> TypeGuard[str]:
    """``url`` is what a relay may be named by: an ``http`` or ``https`` URL with a
    host, no user name or password, no query or fragment, at most
    MAX_RELAY_URL_CHARS characters (the sealed ``relay`` key)."""
    if not isinstance(url, str) or len(url) > MAX_RELAY_URL_CHARS or not url.isprintable():
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and parts.username is None
        and not parts.query
        and not parts.fragment
        and " " not in url
    )
