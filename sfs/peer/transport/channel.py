"""The Channel: what a transfer runs on, whatever carries it.

One seam per kind of transport: the DataChannel (:class:`sfs.peer.transport.webrtc.DataChannelLink`,
several of them as a :class:`sfs.peer.transport.striping.StripedChannel`) and the direct TCP
connection (:class:`sfs.peer.transport.tcp.TcpLink`) each are a :class:`Channel`, and
the conversation (:mod:`sfs.peer.transfer`) knows nothing of either.  :class:`Route`
says how a channel's data flows, in the words a user reads at the end of a transfer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

#: "local", "nat", "direct" (neither is known) and "relay" name a WebRTC connection
#: by its nominated ICE candidate pair (:func:`sfs.peer.transport.gathering.route_of`); "tcp"
#: is the direct TCP connection, "server" the same stream through ``sfs serve``'s relay.
RouteKind = Literal["local", "nat", "direct", "relay", "tcp", "server"]


@dataclass(frozen=True)
class Route:
    """How a channel's data flows."""

    kind: RouteKind
    #: TURN: "HOST (udp)" for our own relay, "HOST" for the other side's; "server":
    #: the host of the sfs relay.
    relay: str = ""
    #: The WebRTC path (its ICE candidate pair) carries QUIC rather than SCTP
    #: (:mod:`sfs.peer.transport.quic`).
    quic: bool = False

    def __str__(self) -> str:
        path = self._path()
        return f"{path}, over QUIC" if self.quic else path

    def _path(self) -> str:
        if self.kind == "tcp":
            return "direct over TCP"
        if self.kind == "server":
            return f"relayed by {self.relay}"
        if self.kind == "local":
            return "direct on the local network"
        if self.kind == "nat":
            return "direct through NAT"
        if self.kind == "direct":
            return "direct"
        if "(" in self.relay:
            return f"relayed by TURN {self.relay}"
        return f"relayed by the other side's TURN {self.relay}"


class Channel(Protocol):
    """A reliable, ordered, message-oriented channel to the peer.

    Writing is asyncio's ``StreamWriter`` model: :meth:`send` hands a frame on at
    once and never waits, so frames go out in the order they were given (the peer
    accepts only the next frame counter); :meth:`drain` waits while too much is
    buffered.  Nothing here times out: the conversation judges the peer's silence
    (:mod:`sfs.peer.proto.conversation`) from :meth:`seconds_since_receive` and
    bounds every wait (:mod:`sfs.peer.transfer`).  Both waits may be cancelled at
    any point without losing a frame.
    """

    @property
    def max_message_size(self) -> int:
        """The largest frame the peer takes."""

    @property
    def preferred_chunk_size(self) -> int:
        """The chunk size measured fastest on this transport (docs/PERFORMANCE.md)."""

    @property
    def route(self) -> Route | None:
        """How the data flows; None while (or if) it is not known."""

    def send(self, frame: bytes) -> None:
        """Hand one message on; raise PeerGoneError if the channel closed."""

    @property
    def congested(self) -> bool:
        """More than the transport's high-water mark is buffered: :meth:`drain`
        before sending more."""

    async def drain(self) -> None:
        """Wait until the buffer is below its low-water mark; raise PeerGoneError if
        the channel closed meanwhile."""

    async def receive(self) -> bytes:
        """Wait for the next message; raise PeerGoneError if the channel closed."""

    def poll(self) -> bytes | None:
        """Return the next message if one is already here, else None."""

    async def wait_closed(self) -> None:
        """Wait until the peer closes the channel."""

    def seconds_since_receive(self) -> float:
        """How long ago the transport last got anything from the peer (read yet or
        not: a frame waiting in a buffer proves the peer alive)."""

    def unsent_bytes(self) -> int:
        """Bytes given to :meth:`send` that have not yet left for the peer: progress
        shown to a user must not count them."""
