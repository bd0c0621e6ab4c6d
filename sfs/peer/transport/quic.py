"""QUIC over the WebRTC path: CLI↔CLI transfers on qh3 instead of aiortc's SCTP.

aiortc's SCTP costs Python work for every 1 200-byte packet on both sides (DTLS, chunk
objects, SACKs): it is the ceiling of every transfer that cannot reach the other side
over TCP. qh3's QUIC does the same per-packet work in native code (measured on this
machine: about three times less CPU per byte; docs/PERFORMANCE.md). When both sides
offered it in the sealed offer/answer, the sender opens a QUIC connection over the
candidate pair ICE nominated for each peer connection, as RFC 9443 multiplexes QUIC
with STUN and DTLS on one port: the NAT binding ICE opened, and any TURN relay it
chose, carry QUIC as they carry DTLS. With several peer connections (``--streams``,
or auto on a long link) the frames are striped over their QUIC connections
(:mod:`sfs.peer.transport.striping`): qh3's congestion control is fixed in its native
core, and one connection's window, cut by every loss, is the limit on a lossy long
link. The DataChannel stays open beside it, for the page and for a sender whose QUIC
does not come up.

On the QUIC stream runs the direct TCP path's protocol (:class:`TcpLink`: the proof with
the session keys, then length-prefixed sealed frames): QUIC's own TLS is not trusted for
anything (its certificate is a throwaway and is not checked), exactly as TCP is not, so
the keys that protect the transfer are only the code's. One change, for a round trip:
the receiver opens the stream and proves itself first, with its handshake flight, over
the sender's Initial connection ID as the dialer's nonce (``Prover(quic_nonce=...)``).

``QuicPath`` drives qh3's sans-I/O ``QuicConnection``: datagrams from the ICE
connection in, datagrams out through the nominated pair, its timer on the event loop.
``StreamTransport`` shows one QUIC stream to :class:`TcpLink` as the asyncio transport
it expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import importlib.util
import logging
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

from sfs.errors import PeerConnectionError
from sfs.peer.proto.crypto import SessionKeys
from sfs.peer.proto.proof import Prover
from sfs.peer.transport.channel import Route
from sfs.peer.transport.tcp import TcpLink

logger = logging.getLogger(__name__)
# qh3 logs every ordinary close ("Native peer close") as a warning; sfs says itself
# what happened to the connection.
logging.getLogger("quic").setLevel(logging.ERROR)

#: ALPN of sfs's QUIC (the transfer protocol's version is the frames', as over TCP).
ALPN = "sfs"
#: How long the sender gives QUIC (its handshake and the proof) once the DataChannel is
#: open before it takes the DataChannel instead: the handshake takes one round trip and
#: the proof one more.
QUIC_SECONDS = 3.0
#: The stream and connection credit each side grants: enough for a 50 ms round trip at
#: a few hundred MiB/s, so flow control never limits the rate before the path does.
STREAM_WINDOW_BYTES = 32 * 1024 * 1024
#: What a stream may hold unsent before TcpLink's writer waits (its pause_writing):
#: shared by the QUIC connections of a striped transfer, so memory does not grow with
#: their number.
WRITE_HIGH_BYTES = 8 * 1024 * 1024
#: A PING marks how much of a stream had left once the data before it advanced this
#: far; its acknowledgement says the peer had it all (below, StreamTransport).
PING_EVERY_BYTES = 64 * 1024
#: PINGs awaiting their acknowledgement, at most (more wait for one to come back).
PINGS_IN_FLIGHT = 16
#: A PING not acknowledged within this long is taken as lost (QUIC never resends a
#: PING) and another is sent for what it marked.
PING_RETRY_SECONDS = 0.25
#: How many of QUIC's first datagrams wait for ICE to nominate a pair, at most, and how
#: often it is asked whether it has (the handshake's few; more is dropped: QUIC resends).
UNPAIRED_DATAGRAMS = 64
PAIR_POLL_SECONDS = 0.01
#: The peer's address as qh3 sees it: a name for the one path, never sent to (datagrams
#: go to the nominated ICE pair's remote address, whatever it is at the time).
PATH_ADDRESS = ("192.0.2.1", 9)
#: While the reader is paused (a slow disk), datagrams wait unprocessed, so qh3 grants
#: no new credit and the sender stops within its window. Past this many bytes waiting
#: they are dropped (QUIC resends them), so memory stays bounded even so.
HELD_DATAGRAM_BYTES = 64 * 1024 * 1024


def quic_available() -> bool:
    """qh3 is installed here (a platform without its wheel keeps the DataChannel).
    Found, not imported: importing it takes about 0.3 s, which only a transfer spends
    (load_qh3, in the set-up's preload thread: sfs.meeting.preload_transports)."""
    return importlib.util.find_spec("qh3") is not None


def load_qh3(*, server: bool = True) -> None:
    """Import what QuicPath uses, and do once what its first connection would.

    Run in a thread while the set-up waits (sfs.meeting.preload_transports): qh3's first
    handshake on either side costs 30-40 ms of one-time work (measured: the first
    ``connect`` 39 ms, the next 0.5 ms), and the receiver's first certificate another
    30 ms of imports; on the critical path, each came before a datagram could leave.

    :param server: also make the certificate (only QUIC's server, the receiver, has one).
    """
    import qh3.quic.connection
    import qh3.quic.events
    import qh3.quic.packet

    qh3.quic.connection.QuicConnection(configuration=_configuration(client=True)).connect(
        PATH_ADDRESS, now=0.0
    )
    if server:
        _configuration(client=False)  # the certificate, made once per process


def is_quic(first_byte: int) -> bool:
    """RFC 9443's demultiplexing: QUIC's first byte has its fixed bit (0x40) set; 0–3
    is STUN, 20–63 DTLS, 128–191 RTP/RTCP (which sfs never sends)."""
    return 64 <= first_byte <= 127 or first_byte >= 192


def _closed_error() -> type[Exception]:
    """What qh3 raises for a call on a connection it closed (imported when one is
    raised: only a QuicPath, which imported qh3, raises it)."""
    from qh3.quic.connection import QuicConnectionError

    return QuicConnectionError


@functools.cache
def _throwaway_certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate and key (PEM), made once per process: QUIC requires
    TLS 1.3 with one, and nothing relies on it (the module comment)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sfs")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _configuration(*, client: bool) -> Any:
    from qh3.quic.configuration import QuicConfiguration
    from qh3.tls import load_pem_private_key, load_pem_x509_certificates

    configuration = QuicConfiguration(
        is_client=client,
        alpn_protocols=[ALPN],
        max_data=2 * STREAM_WINDOW_BYTES,
        max_stream_data=STREAM_WINDOW_BYTES,
        # The transfer has its own idle bound (the Channel's seconds_since_receive).
        idle_timeout=60.0,
    )
    if client:
        configuration.verify_mode = ssl.CERT_NONE
    else:
        certificate, key = _throwaway_certificate()
        configuration.certificate = load_pem_x509_certificates(certificate)[0]
        configuration.private_key = load_pem_private_key(key)
    return configuration


class QuicPath:
    """One QUIC connection over an aioice ``Connection``'s nominated pair.

    Takes the QUIC datagrams from the ICE connection (the rest go on to DTLS as
    before) and sends through the nominated pair. The sender (``client``) connects
    and opens the one stream; the receiver accepts it.
    """

    def __init__(
        self,
        ice: Any,
        *,
        client: bool,
        keys: SessionKeys,
        route: Callable[[], Route | None],
        write_high: int = WRITE_HIGH_BYTES,
    ) -> None:
        """:param write_high: what the stream may hold unsent before its writer waits
        (WRITE_HIGH_BYTES, divided among the connections of a striped transfer)."""
        self._write_high = write_high
        #: The WebRTC path's route, asked once the stream opens (ICE has chosen).
        self._route = route
        self._loop = asyncio.get_running_loop()
        self._ice = ice
        self._client = client
        self._keys = keys
        self._quic: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._transmit_soon: asyncio.Handle | None = None
        self._streams: dict[int, StreamTransport] = {}
        self._held: deque[bytes] = deque()
        self._held_bytes = 0
        self._paused = 0
        self._link: asyncio.Future[TcpLink] = self._loop.create_future()
        self._closed = False
        #: PING uid -> (stream, how much of it had left when the PING was sent).
        self._pings: dict[int, tuple[StreamTransport, int]] = {}
        self._next_ping = 0
        self._ping_check: asyncio.TimerHandle | None = None
        #: Datagrams to send once ICE has nominated a pair (_send_datagrams).
        self._unpaired: list[bytes] = []
        self._pair_poll: asyncio.TimerHandle | None = None
        if client:
            self._start(self._new_connection(None))
        # Only datagrams QUIC's first byte marks are taken: STUN is handled by aioice
        # before this, DTLS goes on to the queue aiortc's DTLS reads.
        self._ice_data_received: Callable[[bytes, int], None] = ice.data_received
        ice.data_received = self._datagram

    def _new_connection(self, original_destination: bytes | None) -> Any:
        from qh3.quic.connection import QuicConnection

        return QuicConnection(
            configuration=_configuration(client=self._client),
            original_destination_connection_id=original_destination,
        )

    def _start(self, connection: Any) -> None:
        self._quic = connection
        logger.debug("QUIC connection %s", "opening" if self._client else "accepted")
        if self._client:
            connection.connect(PATH_ADDRESS, now=self._loop.time())
            self._transmit()

    async def link(self, seconds: float) -> TcpLink:
        """The proven TcpLink on this connection's stream, within ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                return await asyncio.shield(self._link)
        except TimeoutError:
            raise PeerConnectionError(f"no QUIC connection within {seconds:.0f} s") from None

    async def chosen(self, seconds: float) -> TcpLink:
        """(Receiver) the link, once the sender proved itself on it and chose it."""
        link = await self.link(seconds)
        return await link.chosen

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ice.data_received = self._ice_data_received
        if self._quic is not None:
            with contextlib.suppress(_closed_error()):  # closed already
                self._quic.close()
                self._transmit()
        for handle in (self._timer, self._transmit_soon, self._ping_check, self._pair_poll):
            if handle is not None:
                handle.cancel()
        for stream in list(self._streams.values()):
            stream.lost(None)
        if not self._link.done():
            self._link.set_exception(PeerConnectionError("the QUIC connection closed"))
            self._link.exception()

    # -- datagrams in ---------------------------------------------------------------------------

    def _datagram(self, data: bytes, component: int) -> None:
        if not data or not is_quic(data[0]) or self._closed:
            self._ice_data_received(data, component)
            return
        if self._paused:
            if self._held_bytes + len(data) <= HELD_DATAGRAM_BYTES:
                self._held.append(data)
                self._held_bytes += len(data)
            return
        try:
            self._receive(data)
            self._process()
        except _closed_error() as exc:
            self._gone(exc)

    def _gone(self, exc: Exception) -> None:
        """qh3 closed the connection itself (the peer's close, an idle timeout) before
        its event was taken: as closed."""
        logger.debug("QUIC connection closed: %s", exc)
        self.close()

    def _receive(self, data: bytes) -> None:
        if self._quic is None:
            if self._client:
                return
            from qh3._hazmat import Buffer
            from qh3.quic.packet import QuicPacketType, pull_quic_header

            try:
                header = pull_quic_header(Buffer(data=data), host_cid_length=8)
            except ValueError:
                return
            # Only a client's Initial (padded to 1 200 bytes) opens the connection.
            if header.packet_type != QuicPacketType.INITIAL or len(data) < 1200:
                return
            connection = self._new_connection(header.destination_cid)
            self._start(connection)
            connection.receive_datagram(data, PATH_ADDRESS, now=self._loop.time())
            # The receiver's proof goes first, on a stream of its own, with its
            # handshake flight (0.5-RTT data): the sender has it a round trip sooner
            # than if it had to ask.
            self._open_stream(connection.get_next_available_stream_id())
            return
        self._quic.receive_datagram(data, PATH_ADDRESS, now=self._loop.time())

    def _process(self) -> None:
        from qh3.quic import events

        quic = self._quic
        if quic is None:
            return
        while (event := quic.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                stream = self._streams.get(event.stream_id)
                if stream is None:
                    # Only the receiver opens a stream (bidirectional, server-
                    # initiated: ID 1), and only one.
                    if not self._client or self._streams or event.stream_id % 4 != 1:
                        continue
                    stream = self._open_stream(event.stream_id)
                stream.data(event.data, event.end_stream)
            elif isinstance(event, events.PingAcknowledged):
                self._ping_acknowledged(event.uid)
            elif isinstance(event, events.HandshakeCompleted):
                logger.debug("QUIC handshake complete")
            elif isinstance(event, events.ConnectionTerminated):
                logger.debug("QUIC connection closed: %s", event.reason_phrase or event.error_code)
                self.close()
                return
        for stream in list(self._streams.values()):
            stream.check_writable()
        # Once the datagrams that arrived together are all in: one batch out.
        self.transmit_soon()

    # -- datagrams out --------------------------------------------------------------------------

    def transmit_soon(self) -> None:
        """Send what the connection has to send once this turn of the loop is over (so
        a burst of writes leaves in one batch)."""
        if self._transmit_soon is None and not self._closed:
            self._transmit_soon = self._loop.call_soon(self._transmit)

    def _transmit(self) -> None:
        self._transmit_soon = None
        try:
            self._send_datagrams()
        except _closed_error() as exc:
            self._gone(exc)

    def _send_datagrams(self) -> None:
        quic = self._quic
        if quic is None:
            return
        if not self._closed:
            self._mark_departures(quic)
        datagrams = [data for data, _ in quic.datagrams_to_send(now=self._loop.time())]
        pair = self._ice._nominated.get(1)
        if pair is None:
            # The receiver's ICE may take the sender's first QUIC datagrams before it
            # has nominated the pair they came by (the sender's side nominates): keep
            # the replies until it has, rather than leave QUIC to resend after a
            # timeout of a second or more.
            room = UNPAIRED_DATAGRAMS - len(self._unpaired)
            self._unpaired.extend(datagrams[:room])
            if self._unpaired and self._pair_poll is None and not self._closed:
                self._pair_poll = self._loop.call_later(PAIR_POLL_SECONDS, self._poll_pair)
            return
        if self._unpaired:
            datagrams = self._unpaired + datagrams
            self._unpaired = []
        # aioice's own send_data is this, as a coroutine per datagram.
        transport, address = pair.protocol.transport, pair.remote_addr
        for data in datagrams:
            transport.sendto(data, address)
        timer_at = quic.get_timer()
        if self._timer is not None and self._timer_at != timer_at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and timer_at is not None and not self._closed:
            self._timer = self._loop.call_at(timer_at, self._on_timer)
        self._timer_at = timer_at

    def _poll_pair(self) -> None:
        self._pair_poll = None
        self._transmit()

    def _mark_departures(self, quic: Any) -> None:
        """QUIC says nothing of which stream bytes the peer acknowledged; a PING sent
        after them does: once the peer acknowledged the packet that carried it, it had
        every packet sent before (a loss among them would be detected and resent, and
        the progress then runs ahead by that much until it arrives)."""
        now = self._loop.time()
        for stream in self._streams.values():
            departed = stream.written - self.unsent(stream.stream_id)
            overdue = (
                stream.acknowledged < stream.marked and now - stream.pinged_at >= PING_RETRY_SECONDS
            )
            if overdue:
                # Lost with what it marked, or its acknowledgement was: mark again.
                for uid in [u for u, (s, _) in self._pings.items() if s is stream]:
                    del self._pings[uid]
            if overdue or (
                (
                    departed - stream.marked >= PING_EVERY_BYTES
                    or (departed > stream.marked and departed == stream.written)
                )
                and len(self._pings) < PINGS_IN_FLIGHT
            ):
                uid = self._next_ping
                self._next_ping += 1
                self._pings[uid] = (stream, departed)
                stream.marked = departed
                stream.pinged_at = now
                quic.send_ping(uid)
        if self._pings and self._ping_check is None and not self._closed:
            self._ping_check = self._loop.call_later(PING_RETRY_SECONDS, self._check_pings)

    def _check_pings(self) -> None:
        self._ping_check = None
        self.transmit_soon()

    def _ping_acknowledged(self, uid: int) -> None:
        for earlier in [u for u in self._pings if u <= uid]:
            stream, departed = self._pings.pop(earlier)
            stream.acknowledged = max(stream.acknowledged, departed)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._quic is None or self._closed:
            return
        try:
            self._quic.handle_timer(now=self._loop.time())
            self._process()
        except _closed_error() as exc:
            self._gone(exc)

    # -- the stream -----------------------------------------------------------------------------

    def _open_stream(self, stream_id: int) -> StreamTransport:
        stream = StreamTransport(self, stream_id, high=self._write_high)
        self._streams[stream_id] = stream
        prover = Prover(
            dialer=self._client,
            own_key=self._keys.proof_send,
            peer_key=self._keys.proof_receive,
            quic_nonce=self._quic.original_destination_connection_id,
        )
        link = QuicLink(prover, awaits_choice=not self._client, route=self._route)
        link.proven.add_done_callback(self._on_proven)
        stream.set_protocol(link)
        link.connection_made(stream)
        return stream

    def _on_proven(self, proven: asyncio.Future[TcpLink]) -> None:
        if self._link.done():
            return
        if proven.exception() is not None:
            self._link.set_exception(proven.exception() or PeerConnectionError("QUIC failed"))
            self._link.exception()
        else:
            self._link.set_result(proven.result())

    def send_stream(self, stream_id: int, data: bytes | memoryview, end: bool = False) -> None:
        if self._quic is None or self._closed:
            return
        try:
            self._quic.send_stream_data(stream_id, data, end_stream=end)
        except _closed_error():
            # Closed by the peer, and the event not yet taken: the stream's protocol
            # learns it from connection_lost, as from a TCP reset.
            self._loop.call_soon(self.close)
            return
        self.transmit_soon()

    def unsent(self, stream_id: int) -> int:
        if self._quic is None or self._closed:
            return 0
        try:
            return int(self._quic.get_send_buffer_size(stream_id))
        except _closed_error():
            return 0

    def pause_reading(self) -> None:
        self._paused += 1

    def resume_reading(self) -> None:
        self._paused = max(0, self._paused - 1)
        if self._paused or self._closed:
            return
        try:
            while self._held and not self._paused:
                data = self._held.popleft()
                self._held_bytes -= len(data)
                self._receive(data)
                self._process()
        except _closed_error() as exc:
            self._gone(exc)


class QuicLink(TcpLink):
    """The TCP path's link on a QUIC stream; its route is the WebRTC path's as it is
    when asked: ICE may first nominate a relayed pair and then a direct one, and QUIC's
    datagrams follow the nominated pair (QuicPath._send_datagrams)."""

    def __init__(
        self, prover: Prover, *, awaits_choice: bool, route: Callable[[], Route | None]
    ) -> None:
        super().__init__(prover, awaits_choice=awaits_choice)
        self._route_now = route

    @property
    def route(self) -> Route:
        return dataclasses.replace(self._route_now() or Route("direct"), quic=True)

    @route.setter
    def route(self, value: Route) -> None:
        raise AttributeError("a QUIC link's route is its WebRTC path's")


class StreamTransport(asyncio.Transport):
    """One QUIC stream as the asyncio transport :class:`TcpLink` runs on."""

    def __init__(self, path: QuicPath, stream_id: int, *, high: int = WRITE_HIGH_BYTES) -> None:
        super().__init__()
        self._path = path
        self._id = stream_id
        #: Bytes written to the stream; how many had left (and a PING was sent after
        #: them); how many of those the peer acknowledged (QuicPath._mark_departures).
        self.written = 0
        self.marked = 0
        self.acknowledged = 0
        self.pinged_at = 0.0
        self._protocol: Any = None
        self._closing = False
        self._write_paused = False
        self._reading = True
        self._high = high
        self._low = high // 2

    # -- what TcpLink calls ---------------------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[no-any-return]

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        # No socket and no peer name: the path is the ICE pair's (the link's route).
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        # TcpLink's limit is for a kernel socket behind the buffer; a QUIC stream's
        # buffer is the whole window in flight, so it keeps its own (larger) marks.
        pass

    @property
    def stream_id(self) -> int:
        return self._id

    def get_write_buffer_size(self) -> int:
        """What the peer has not acknowledged yet (TcpLink.unsent_bytes: the sender's
        progress counts what reached the other side)."""
        return self.written - self.acknowledged

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        self.written += len(data)
        self._path.send_stream(self._id, bytes(data))
        self.check_writable()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._path.send_stream(self._id, b"", end=True)
        self.lost(None)
        self._path._loop.call_later(1.0, self._path.close)

    def abort(self) -> None:
        self._closing = True
        self.lost(None)
        self._path.close()

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._path.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._path.resume_reading()

    def is_reading(self) -> bool:
        return self._reading

    # -- what QuicPath calls --------------------------------------------------------------------

    def check_writable(self) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        unsent = self._path.unsent(self._id)
        if not self._write_paused and unsent > self._high:
            self._write_paused = True
            protocol.pause_writing()
        elif self._write_paused and unsent <= self._low:
            self._write_paused = False
            protocol.resume_writing()

    def data(self, data: bytes, end: bool) -> None:
        protocol = self._protocol
        view = memoryview(data)
        while view and protocol is not None:
            buffer = protocol.get_buffer(len(view))
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            view = view[n:]
            protocol.buffer_updated(n)
        if end:
            self.lost(None)

    def lost(self, exc: Exception | None) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.connection_lost(exc)
