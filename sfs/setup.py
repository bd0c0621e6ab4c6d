"""The set-up: from a server (or a LAN peer's embedded one) to an open transport.

:func:`set_up` pumps :class:`sfs.peer.proto.handshake.Handshake`, which decides
everything (pairing, SPAKE2, the sealed offer/answer, which transport), between the
signaling client, the peer connections and the direct path, until the transport of
the transfer is open: a :class:`Session`. Nothing here prints; what the user sees
goes through a :class:`Ui`. :mod:`sfs.meeting` runs it; :mod:`sfs.app` moves the files after.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlsplit

from sfs.defaults import (
    LAN_FIND_SECONDS,
    PEER_CONNECT_TIMEOUT_SECONDS,
    RECONNECT_WINDOW_SECONDS,
    RelayMode,
    Transport,
)
from sfs.errors import (
    PeerConnectionError,
    ServerUnreachableError,
    SfsError,
)
from sfs.peer.files.destinations import Plan
from sfs.peer.proto.crypto import SessionKeys
from sfs.peer.proto.framing import Role
from sfs.peer.proto.handshake import (
    AcceptAnswers,
    Action,
    AnswerOffers,
    Call,
    Cancelled,
    ChannelOpen,
    CreateOffers,
    Done,
    Handshake,
    Leave,
    LocalDescription,
    OpenChannel,
    Reconnect,
    Registered,
    ServerLost,
    SetupEvent,
    ShowCode,
    Status,
    signal_event,
)
from sfs.peer.proto.progress import Progress
from sfs.peer.proto.wire import Offer
from sfs.peer.transport.channel import Channel
from sfs.peer.transport.opening import Opened, QuicOpener, open_transport
from sfs.peer.transport.quic import quic_available
from sfs.peer.transport.relay import open_relay, relay_url
from sfs.peer.transport.tcp import RELAY_HEAD_START_SECONDS, DirectPath
from sfs.signal.client import SERVER_LOST, Registration, SignalClient, page_link
from sfs.signal.messages import IceServer
from sfs.socks import Socks
from sfs.text import printable

if TYPE_CHECKING:
    # aiortc is imported where it is used: it comes from sfs.meeting.preload_transports,
    # in a thread, while the set-up waits on the network.
    from sfs.peer.transport.webrtc import PeerLinks


logger = logging.getLogger(__name__)

#: How long a waiting receiver keeps trying to reach a server that went away.
RECONNECT_SECONDS = 300.0
#: How long a side cancelled during set-up tries to tell its partner.
ABORT_NOTICE_SECONDS = 2.0


class Ui(Protocol):
    """What the user sees and answers; the CLI implements it with click and tqdm."""

    def status(self, message: str) -> None: ...
    def show_code(self, code: str, link: str | None = None) -> None:
        """Show the code; ``link`` opens the server's web page with it filled in."""

    def progress(self) -> Progress: ...
    async def decide(self, offer: Offer, plan: Plan, *, paired: str | None = None) -> bool:
        """Ask whether to take ``offer``; ``plan`` says where each file would go;
        ``paired``: the paired device it comes from (authenticated, unlike the name
        the sender gives in the offer)."""

    async def confirm_verifier(self, verifier: str) -> bool: ...
    def kept_partial(self, name: str, held_bytes: int) -> None: ...
    def reconnecting(self, window: float) -> None:
        """The connection broke: looking for the other side for up to ``window`` s."""

    def reconnected(self, route: str) -> None:
        """The other side is back (``route``: how the data flows now); resuming."""


class Signal(Protocol):
    """What a set-up needs of its server connection: a :class:`SignalClient`, or
    (`sfs send --many`) one partner's view of a connection shared by several."""

    async def register(self, rendezvous: str | None = None) -> Registration: ...
    async def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]: ...
    async def next_event(self) -> tuple[str, dict[str, Any]]: ...
    def leave(self) -> None: ...


@dataclass(frozen=True)
class PeerOptions:
    """Options both peers share.

    :param server_url: the signaling server (``sfs serve``); ``None`` is LAN mode:
        the waiting side runs one in-process and advertises it on mDNS, the
        joining side finds it there.
    :param ice_servers: STUN/TURN servers; ``None`` means those the server recommends.
    :param ice_addresses: restrict ICE host candidates to these local addresses.
    :param name: the display name a waiting side advertises in LAN mode.
    :param find_timeout: in LAN mode, how long the joining side looks for the peer.
    :param ca_file: certificates to trust for an ``https://`` server (a private CA).
    :param transport: TCP when the peers reach each other directly, else WebRTC
        (``auto``); or only one of them.
    :param relay: whether the server's relay may carry the transfer (``--relay``).
    :param reconnect_window: after the connection breaks mid-transfer, how long to
        look for the other side again (seconds; 0: never).
    """

    server_url: str | None = None
    ice_servers: tuple[IceServer, ...] | None = None
    ice_addresses: tuple[str, ...] = ()
    connect_timeout: float = PEER_CONNECT_TIMEOUT_SECONDS
    name: str = ""
    find_timeout: float = LAN_FIND_SECONDS
    ca_file: str | None = None
    transport: Transport = Transport.AUTO
    relay: RelayMode = RelayMode.AUTO
    reconnect_window: float = RECONNECT_WINDOW_SECONDS
    #: --proxy: signaling, the relay and direct dials through this SOCKS5 proxy; no
    #: WebRTC (no UDP) unless --transport datachannel asks for it.
    proxy: Socks | None = None


@dataclass(frozen=True)
class Session:
    """An open, authenticated channel to the peer (a proven TCP connection or the
    DataChannel(s)), and the session keys of that transport."""

    channel: Channel
    keys: SessionKeys
    #: Both sides keep the session after an outage and meet again (sfs.reconnect).
    reconnects: bool = False
    #: In a pairing session (`sfs pair`), the name the other side gave itself.
    pair_name: str | None = None
    #: The paired device this session is with (`sfs send @NAME`, or found by `sfs
    #: receive` at a pair's rendezvous): authenticated by the pairing secret.
    paired_with: str | None = None


async def set_up(
    stack: AsyncExitStack,
    handshake: Handshake,
    url: str,
    options: PeerOptions,
    ui: Ui,
    addresses: tuple[str, ...],
    *,
    registered: Callable[[str], Awaitable[None]] | None = None,
    page: str | None = None,
    signal: Signal | None = None,
) -> Session:
    """Pump ``handshake`` between the signaling client at ``url`` and the peer
    connection(s).

    Everything the set-up decides is :class:`Handshake`'s; this only carries out its
    actions and feeds it what the server, the connection and the clock say.  The
    connections and the signaling client live on ``stack``.

    :param registered: awaited with each peer ID the server gives, before the code
        is shown (LAN mode advertises it).
    :param page: the web page to link each code shown to.
    :param signal: a connection to that server that is already there (`sfs send
        --many`: one receiver's view of the shared one); else one is made.
    """
    if signal is None:
        logger.debug("connecting to %s", url)
        signal = await stack.enter_async_context(_signal_client(url, options))
        logger.debug("connected to the server")
    pump = _SetUpPump(stack, handshake, url, options, ui, addresses, signal, registered, page)
    return await pump.run()


class _SetUpPump:
    """What :func:`set_up` holds while it pumps: the signaling client (a new one after
    a reconnect), the peer connections, the direct path and the channel being opened,
    and the events the actions produced for the handshake."""

    def __init__(
        self,
        stack: AsyncExitStack,
        handshake: Handshake,
        url: str,
        options: PeerOptions,
        ui: Ui,
        addresses: tuple[str, ...],
        signal: Signal,
        registered: Callable[[str], Awaitable[None]] | None,
        page: str | None,
    ) -> None:
        self.stack = stack
        self.handshake = handshake
        self.url = url
        self.options = options
        self.ui = ui
        self.addresses = addresses
        self.signal = signal
        self.registered = registered
        self.page = page
        self.links: PeerLinks | None = None
        self.direct: DirectPath | None = None
        self.opener: asyncio.Future[Opened] | None = None
        self.wants_tcp = options.transport is not Transport.DATACHANNEL
        self.relay_only = options.relay is RelayMode.ONLY
        #: --proxy (and not --transport datachannel): TCP through the proxy only, so no
        #: WebRTC at all, as with --relay only, and nothing listens.
        self.proxied = options.proxy is not None and self.wants_tcp
        #: No WebRTC: no ICE servers asked, no DataChannel, no QUIC.
        self.no_webrtc = self.relay_only or self.proxied
        #: QUIC on the WebRTC path, offered in the sealed description (SFS_QUIC=0
        #: leaves it out, for measuring the DataChannel).
        self.offers_quic = (
            options.transport is not Transport.TCP
            and not self.no_webrtc
            and os.environ.get("SFS_QUIC", "1") != "0"
            and quic_available()
        )
        self.keys: SessionKeys | None = None
        #: The relay this side offered (its server's), once registered.
        self.own_relay: str | None = None
        self.pending: deque[SetupEvent] = deque()

    async def run(self) -> Session:
        loop = asyncio.get_running_loop()
        try:
            await self._register()
            while True:
                for batch in call_batches(await self._next_actions(loop.time)):
                    if isinstance(batch[0], Call):
                        await _calls(self.signal, cast(list[Call], batch))
                        continue
                    session = await self._carry_out(batch[0])
                    if session is not None:
                        return session
        except (KeyboardInterrupt, asyncio.CancelledError):
            await _tell_partner(self.signal, self.handshake.handle(Cancelled(), loop.time()))
            raise
        finally:
            if self.opener is not None and not self.opener.done():
                self.opener.cancel()
                await asyncio.gather(self.opener, return_exceptions=True)

    async def _register(self) -> None:
        registration = await self.signal.register(self.handshake.rendezvous)
        logger.debug("registered")
        if self.options.server_url is not None and not registration.come_back:
            # A server that cannot take the session back (LAN mode meets again on mDNS).
            self.handshake.withhold_reconnect()
        peer_id = registration.peer_id
        if self.registered is not None:
            await self.registered(peer_id)
        relay = None
        if self.options.relay is not RelayMode.NEVER and self.wants_tcp:
            relay = relay_url(self.url, registration.relay)
            if relay is None and self.relay_only:
                raise PeerConnectionError(
                    "the server offers no relay (--relay only): it runs with --no-relay, "
                    "or is an older sfs"
                )
        self.own_relay = relay
        self.pending.append(Registered(peer_id, registration.ice_servers, relay))

    async def _next_actions(self, now: Callable[[], float]) -> list[Action]:
        """The handshake's answer to the next event: one the actions produced, else
        the next input, else the deadline."""
        if self.pending:
            return self.handshake.handle(self.pending.popleft(), now())
        self.handshake.prepare()  # work ahead of the wait (this side's SPAKE2 message)
        event = await _next_input(self.signal, self.opener, self.handshake.next_deadline())
        if event is None:  # a deadline, or an event set-up does not use
            return self.handshake.handle_timer(now())
        return self.handshake.handle(event, now())

    async def _carry_out(self, action: Action) -> Session | None:
        """Carry out one action; the session once the handshake is done."""
        if isinstance(action, Call):
            await _call(self.signal, action)  # (run() sends calls in batches)
        elif isinstance(action, ShowCode):
            link = (
                None
                if self.page is None
                else page_link(self.page, action.code, receive=self.handshake.role is Role.SENDER)
            )
            self.ui.show_code(action.code, link)
        elif isinstance(action, Status):
            self.ui.status(action.message)
        elif isinstance(action, Reconnect):
            # How to get back (retries, pauses) is I/O policy, so it lives here;
            # that the old code is dead and a new one is shown is the handshake's.
            self.signal = await _reconnect(self.url, self.options, self.stack)
            await self._register()
        elif isinstance(action, CreateOffers):
            await self._create_offers(action)
        elif isinstance(action, AnswerOffers):
            await self._answer_offers(action)
        elif isinstance(action, AcceptAnswers):
            assert self.links is not None
            if not self.no_webrtc:
                await self.links.accept_answers(_descriptions("answer", action.sdps))
            if self.direct is not None and action.tcp is not None:
                self.direct.dial(action.tcp)
        elif isinstance(action, OpenChannel):
            await self._open_channel(action)
        elif isinstance(action, Leave):
            # From here on the peers talk directly; a server that goes away now
            # cannot disturb the transfer.
            self.signal.leave()
        elif isinstance(action, Done):
            return await self._session(action)
        else:
            raise action.error
        return None

    async def _create_offers(self, action: CreateOffers) -> None:
        if self.handshake.round_trip is not None:
            logger.info(
                "round trip through the server %.1f ms: %d WebRTC stream(s)",
                self.handshake.round_trip * 1000,
                action.count,
            )
        from sfs.peer.transport.webrtc import PeerLinks

        self.links = await self.stack.enter_async_context(
            PeerLinks(action.count, ice_servers=self._ice(action), host_addresses=self.addresses)
        )
        offers = await self.links.create_offers()
        if self.no_webrtc:
            await self._without_webrtc()
        tcp = None
        if self.wants_tcp:
            self.direct = _direct_path(
                self.stack,
                sender=True,
                keys=action.keys,
                hosts=self._tcp_hosts(),
                proxy=self.options.proxy if self.proxied else None,
            )
            tcp = await self.direct.listen()
        self.keys = action.keys
        self.pending.append(
            LocalDescription(tuple(d["sdp"] for d in offers), tcp, quic=self.offers_quic)
        )

    async def _answer_offers(self, action: AnswerOffers) -> None:
        from sfs.peer.transport.webrtc import PeerLinks

        self.links = await self.stack.enter_async_context(
            PeerLinks(
                len(action.sdps),
                ice_servers=self._ice(action),
                host_addresses=self.addresses,
            )
        )
        tcp = None
        if self.wants_tcp:
            # Also for a sender that takes no direct TCP (the page): the relay's
            # connection is one of this path's.
            self.direct = _direct_path(
                self.stack,
                sender=False,
                keys=action.keys,
                hosts=self._tcp_hosts(),
                proxy=self.options.proxy if self.proxied else None,
            )
        if self.direct is not None and action.tcp is not None:
            # Dialing the sender's listeners while ours start and the answer
            # travels: on a LAN the connection is proven before it arrives.
            if not self.relay_only:
                self.direct.dial(action.tcp)
            tcp = await self.direct.listen()
        offered = action.sdps
        if self.no_webrtc:
            # Its candidates are not ours to check: no connectivity check goes out.
            offered = tuple(without_candidates(sdp) for sdp in offered)
        answers = await self.links.answer_offers(_descriptions("offer", offered))
        if self.no_webrtc:
            await self._without_webrtc()
        self.keys = action.keys
        self.pending.append(
            LocalDescription(tuple(d["sdp"] for d in answers), tcp, quic=self.offers_quic)
        )

    async def _without_webrtc(self) -> None:
        """--relay only, --proxy: the session descriptions are made (the other side
        expects them), then the peer connections close at once, so nothing answers
        the other side's connectivity checks and none goes out: no UDP at all."""
        assert self.links is not None
        await self.links.close()

    def _ice(self, action: CreateOffers | AnswerOffers) -> tuple[IceServer, ...]:
        # With --relay only or --proxy, WebRTC is never opened: no STUN or TURN to ask.
        return () if self.no_webrtc else action.ice_servers

    def _tcp_hosts(self) -> tuple[str, ...]:
        # With --relay only, nothing listens: the one connection goes out to the relay.
        from sfs.peer.transport.gathering import host_addresses

        return () if self.relay_only else host_addresses(self.addresses)

    async def _open_channel(self, action: OpenChannel) -> None:
        links = self.links
        assert links is not None
        relay = action.relay
        if relay is not None and not _trusted_relay(relay, self.url, self.own_relay):
            # The receiver names the relay: a peer with the code must not make this
            # machine send requests to any host it likes (a port on the LAN, say).
            logger.info("not joining %s: not this side's server", relay)
            relay = None
            if self.relay_only:
                raise PeerConnectionError(
                    f"the other side named a relay on another host than your server "
                    f"({printable(urlsplit(action.relay or '').hostname or '', 100)}): "
                    "not used (--relay only)"
                )
        direct = self.direct if action.direct or relay is not None else None
        if self.direct is not None and direct is None:
            await self.direct.close()  # the other side takes no TCP, and no relay
        if direct is not None and relay is not None:
            direct.relay(
                relay,
                functools.partial(open_relay, timeout=self.options.connect_timeout,
                                  ca_file=self.options.ca_file, proxy=self.options.proxy),
                delay=0.0 if self.no_webrtc else RELAY_HEAD_START_SECONDS,
                sole=self.relay_only,
            )  # fmt: skip
        elif self.relay_only:
            raise PeerConnectionError(
                "the other side takes no relay (--relay only): an older sfs, or --relay never"
            )
        datachannel = functools.partial(links.open, self.options.connect_timeout)
        sender = self.handshake.role is Role.SENDER
        quic = None
        if action.quic and not self.no_webrtc:
            assert self.keys is not None
            quic = self._quic_opener(links, self.keys, sender=sender)
        if self.proxied and direct is None:
            raise PeerConnectionError(
                "through the proxy there is no way to the other side: it takes no direct "
                "TCP and no relay (the server's relay is off, or the other side runs "
                "--relay never or --transport datachannel)"
            )
        self.opener = asyncio.ensure_future(
            open_transport(
                sender=sender,
                # Through the proxy, TCP only (the direct dials or the relay).
                transport=Transport.TCP if self.proxied else self.options.transport,
                direct=direct,
                datachannel=None if self.no_webrtc else datachannel,
                connect_timeout=self.options.connect_timeout,
                quic=quic,
            )
        )

    def _quic_opener(self, links: PeerLinks, keys: SessionKeys, *, sender: bool) -> QuicOpener:
        """QUIC on every peer connection's WebRTC path: the sender connects each as
        soon as its ICE has a pair (beside DTLS and SCTP; open_transport bounds the
        wait); the receiver listens from now on (the sender's first datagram may come
        before its ICE says so)."""
        seconds = self.options.connect_timeout
        if sender:
            return functools.partial(links.quic_links, keys, seconds)
        return functools.partial(links.quic_chosen, keys, seconds)

    async def _session(self, action: Done) -> Session:
        assert self.opener is not None
        assert self.links is not None
        opened = self.opener.result()
        reconnects = self.handshake.can_reconnect
        name = self.handshake.peer_pair_name
        if opened.quic:
            # The QUIC stream runs the TCP path's frames; the peer connection carries it.
            return Session(opened.channel, action.keys.over_tcp(), reconnects, name)
        if opened.tcp is None:
            return Session(opened.channel, action.keys, reconnects, name)
        # aiortc's ICE and DTLS would go on spending CPU beside the transfer: closed
        # now, but not waited for (a third of a second on the long link) before the
        # first frame goes; the session's end waits for it.
        closing = asyncio.ensure_future(self.links.close())
        self.stack.push_async_callback(_finish_closing, closing)
        self.stack.callback(opened.tcp.close)
        return Session(opened.channel, action.keys.over_tcp(), reconnects, name)


async def _finish_closing(closing: asyncio.Future[None]) -> None:
    """Wait for the unused peer connections to close; a failure to close them does not
    turn a transfer into a failure."""
    try:
        await closing
    except Exception:  # aiortc's own errors too: the transfer is what counts
        logger.debug("closing the unused peer connections failed", exc_info=True)


async def _next_input(
    signal: Signal,
    opener: asyncio.Future[Opened] | None,
    deadline: float | None,
) -> SetupEvent | None:
    """The next thing that happened: a server event, the channel opening, or
    ``None`` when the deadline came first (or the server said something unused)."""
    receiving = asyncio.ensure_future(signal.next_event())
    waiters: set[asyncio.Future[Any]] = {receiving}
    if opener is not None:
        waiters.add(opener)
    timeout = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not receiving.done():
            # Safe: an event not yet taken stays in the client's queue for the next call.
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)
    if opener is not None and opener.done():
        opener.result()  # raises why the channel did not open
        return ChannelOpen()
    if receiving.cancelled():
        return None
    name, data = receiving.result()
    return ServerLost() if name == SERVER_LOST else signal_event(name, data)


def call_batches(actions: list[Action]) -> list[list[Action]]:
    """``actions`` in order, each run of consecutive :class:`Call` in one list, every
    other action alone."""
    batches: list[list[Action]] = []
    for action in actions:
        if isinstance(action, Call) and batches and isinstance(batches[-1][-1], Call):
            batches[-1].append(action)
        else:
            batches.append([action])
    return batches


async def _calls(signal: Signal, calls: list[Call]) -> None:
    """Send ``calls`` one after the other without waiting for each answer, then wait
    for the answers; raise the first call's error, in order.

    The server handles one connection's events in order (sfs/signal/server.py,
    async_handlers=False), so a call needs no answer to the one before: the waiting
    side's accept_connection and send_public_key went a round trip to the server
    apart, and that round trip was on the set-up's critical path.  Each call is sent
    before the next is (socketio queues the packet before its first await).
    """
    if len(calls) == 1:
        await _call(signal, calls[0])
        return
    results = await asyncio.gather(*(_call(signal, c) for c in calls), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _call(signal: Signal, call: Call) -> None:
    if not call.best_effort:
        await signal.call(call.event, call.payload)
        return
    try:
        await signal.call(call.event, call.payload)
    except SfsError:
        logger.debug("could not tell the other side (%s)", call.event, exc_info=True)


async def _tell_partner(signal: Signal, actions: list[Action]) -> None:
    """A Ctrl-C during set-up reaches the partner at once, through the server (there
    is no channel yet to carry a CANCEL): it must not wait out a timeout."""
    for action in actions:
        if not isinstance(action, Call):
            continue
        try:
            async with asyncio.timeout(ABORT_NOTICE_SECONDS):
                await signal.call(action.event, action.payload)
        except (SfsError, TimeoutError, asyncio.CancelledError):
            logger.debug("could not tell the partner about the cancel", exc_info=True)


def without_candidates(sdp: str) -> str:
    """A session description with no ICE candidates: applied, it starts no checks."""
    lines = sdp.split("\r\n")
    return "\r\n".join(
        line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))
    )


def _direct_path(
    stack: AsyncExitStack,
    *,
    sender: bool,
    keys: SessionKeys,
    hosts: tuple[str, ...],
    proxy: Socks | None = None,
) -> DirectPath:
    """The direct TCP path of this session on ``hosts``, closed with the rest of the set-up."""
    direct = DirectPath(sender=sender, keys=keys, hosts=hosts, proxy=proxy)
    stack.push_async_callback(direct.close)
    return direct


def _trusted_relay(relay: str, server_url: str, own_relay: str | None) -> bool:
    """A relay this side connects to: one on its own server's host (any port or path:
    a cluster's nodes behind one name), or on the host of the relay its server named."""
    host = urlsplit(relay).hostname
    trusted = {urlsplit(server_url).hostname, urlsplit(own_relay or "").hostname} - {None}
    return host is not None and host in trusted


def _descriptions(kind: str, sdps: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"type": kind, "sdp": sdp} for sdp in sdps]


def _signal_client(url: str, options: PeerOptions) -> SignalClient:
    return SignalClient(
        url, connect_timeout=options.connect_timeout, ca_file=options.ca_file, proxy=options.proxy
    )


async def _reconnect(url: str, options: PeerOptions, stack: AsyncExitStack) -> SignalClient:
    """Connect again, retrying with growing pauses for up to RECONNECT_SECONDS."""
    deadline = time.monotonic() + RECONNECT_SECONDS
    pause = 0.5
    while True:
        try:
            return await stack.enter_async_context(_signal_client(url, options))
        except ServerUnreachableError:
            if time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 5.0)
