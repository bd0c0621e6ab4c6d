"""The Channel: what a transfer runs on, whatever carries it.

One seam per kind of transport: the DataChannel (:class:`sfs.peer.transport.webrtc.DataChannelLink`,
several of them as a :class:`sfs.peer.transport.webrtc.StripedChannel`) and the direct TCP
connection (:class:`sfs.peer.transport.tcp.TcpLink`) each are a :class:`Channel`, and
:mod:`sfs.peer.transfer` knows nothing of either.  :class:`Route` says how a channel's
data flows, in the words a user reads at the end of a transfer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

#: "local", "nat", "direct" (neither is known) and "relay" name a WebRTC connection
#: by its nominated ICE candidate pair (:func:`sfs.peer.transport.gathering.route_of`); "tcp"
#: is the direct TCP connection.
RouteKind = Literal["local", "nat", "direct", "relay", "tcp"]


@dataclass(frozen=True)
class Route:
    """How a channel's data flows."""

    kind: RouteKind
    relay: str = ""  # "HOST (udp)" for our own relay; "HOST" for the other side's

    def __str__(self) -> str:
        if self.kind == "tcp":
            return "direct over TCP"
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

    Ordering: :meth:`send` hands the frame on (to the transport's buffer) before its
    first ``await``; it may then wait while too much is buffered.  So a frame sealed
    and given to ``send`` with no ``await`` between goes out in the order it was
    sealed, whatever other task sends too: the sender seals each chunk and sends it
    without the lock under which the keepalive seals and sends its PING
    (:func:`sfs.peer.transfer.keepalive`), and the peer accepts only the next frame
    counter.
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

    async def send(self, frame: bytes) -> None:
        """Send one message, waiting while too much is buffered."""

    async def receive(self) -> bytes:
        """Wait for the next message; raise PeerGoneError if the channel closed."""

    def poll(self) -> bytes | None:
        """Return the next message if one is already here, else None."""

    async def wait_closed(self) -> None:
        """Wait until the peer closes the channel."""

    def seconds_since_send(self) -> float:
        """How long ago this side last sent a message."""

    def unsent_bytes(self) -> int:
        """Bytes given to :meth:`send` that have not yet left for the peer: progress
        shown to a user must not count them."""
