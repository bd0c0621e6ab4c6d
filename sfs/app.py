"""The three jobs of sfs as coroutines: serve, receive, send.

The CLI and the tests call these.  They wire the pieces together: the set-up
(pairing, SPAKE2, the sealed offer/answer) is :class:`sfs.peer.proto.handshake.Handshake`,
which this module only pumps between the signaling client and the aiortc
connection; then :mod:`sfs.peer.sending` or :mod:`sfs.peer.receiving` moves the
files.  Nothing here prints; what the user sees goes through a :class:`Ui`.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlsplit

from sfs.code import Code
from sfs.defaults import LAN_FIND_SECONDS as LAN_FIND_SECONDS
from sfs.defaults import PEER_CONNECT_TIMEOUT_SECONDS, RelayMode, Transport
from sfs.errors import (
    DiskError,
    PeerConnectionError,
    ServerUnreachableError,
    SfsError,
    SourceError,
    VerificationError,
)
from sfs.lan.record import Advert, signaling_url
from sfs.peer.files.destinations import Plan
from sfs.peer.files.sources import Sources, inspect_tree, stream_source, text_source
from sfs.peer.proto.conversation import Conversation
from sfs.peer.proto.crypto import FRAME_OVERHEAD_BYTES, SessionKeys
from sfs.peer.proto.framing import Role, TransferProtocol
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
from sfs.peer.proto.wire import MAX_ENTRIES, Offer
from sfs.peer.receiving import receive_files
from sfs.peer.sending import send_files
from sfs.peer.transfer import Pump, TransferResult, linger
from sfs.peer.transport.addresses import check_local_addresses
from sfs.peer.transport.channel import Channel
from sfs.peer.transport.opening import Opened, QuicOpener, open_transport
from sfs.peer.transport.quic import load_qh3, quic_available
from sfs.peer.transport.relay import open_relay, relay_url
from sfs.peer.transport.tcp import RELAY_HEAD_START_SECONDS, DirectPath
from sfs.signal.client import SERVER_LOST, SignalClient, page_link, serves_page
from sfs.signal.messages import IceServer
from sfs.text import printable

if TYPE_CHECKING:
    # What a transfer does not need is imported where it is used: LAN mode (zeroconf,
    # the embedded server), `sfs serve` and `sfs check` cost a transfer's start-up a
    # tenth of a second or more, and aiortc and qh3 come from preload_transports.
    from sfs.check import Report
    from sfs.peer.transport.webrtc import PeerLinks
    from sfs.signal.config import ServerConfig

logger = logging.getLogger(__name__)

#: How long a waiting receiver keeps trying to reach a server that went away.
RECONNECT_SECONDS = 300.0
#: How long a side cancelled during set-up tries to tell its partner.
ABORT_NOTICE_SECONDS = 2.0
#: After its last acknowledgement, the receiver waits this long for the sender to
#: close, so that acknowledgement is not lost with a connection torn down too early.
CLOSE_GRACE_SECONDS = 5.0


class Ui(Protocol):
    """What the user sees and answers; the CLI implements it with click and tqdm."""

    def status(self, message: str) -> None: ...
    def show_code(self, code: str, link: str | None = None) -> None:
        """Show the code; ``link`` opens the server's web page with it filled in."""

    def progress(self) -> Progress: ...
    async def decide(self, offer: Offer, plan: Plan) -> bool:
        """Ask whether to take ``offer``; ``plan`` says where each file would go."""

    async def confirm_verifier(self, verifier: str) -> bool: ...
    def kept_partial(self, name: str, held_bytes: int) -> None: ...


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


@dataclass(frozen=True)
class SendConfig:
    """:param code: the receiver's code; ``None`` prints a code here and waits for
    ``sfs receive CODE`` (the sender-first flow)."""

    code: Code | None
    paths: tuple[Path, ...]
    peer: PeerOptions = PeerOptions()
    #: Plaintext bytes per frame; None: what the transport carries fastest.
    chunk_size: int | None = None
    sender_name: str = ""
    verify: bool = False
    #: Peer connections to stripe a WebRTC transfer over; None: from the round trip.
    streams: int | None = None
    resume: bool = True
    #: A text message to send instead of ``paths``.
    text: str | None = None
    #: A pipe to send instead of ``paths`` (``sfs send -``), and its name.
    stream: IO[bytes] | None = None
    stream_name: str = "stdin"
    compress: bool = True
    #: Show a printed code with a link to the web page (--qr, --json): the server's, if
    #: it serves one; in LAN mode, the embedded server's.
    link: bool = False


@dataclass(frozen=True)
class ReceiveConfig:
    """:param code: the sender's code (``sfs send --print-code``) to join; ``None``
    prints a code here and waits for the sender (the receiver-first flow)."""

    output_dir: Path = Path(".")
    overwrite: bool = False
    peer: PeerOptions = PeerOptions()
    verify: bool = False
    resume: bool = True
    code: Code | None = None
    #: Write the one offered file or pipe here (``--stdout``), not into output_dir.
    sink: IO[bytes] | None = None
    #: Show the code with a link to the web page (--qr, --json): the server's, if it
    #: serves one; in LAN mode, the embedded server's.
    link: bool = False


async def serve(config: ServerConfig, *, ready: Callable[[str], None] | None = None) -> None:
    """Run the signaling server until cancelled."""
    from sfs.signal.server import run_server

    await run_server(config, ready=ready)


async def peers(show: Callable[[list[Advert]], None], *, once: float | None = None) -> list[Advert]:
    """Who is waiting on the local network (LAN mode's mDNS records).

    :param once: look for this long, then return what was found; ``None`` calls
        ``show`` with the list at once, on every change and every second (the
        waiting times grow) until cancelled.
    """
    from sfs.lan.discovery import Browser, find_lan, open_zeroconf

    loop = asyncio.get_running_loop()
    zeroconf = open_zeroconf(find_lan())
    try:
        async with Browser(zeroconf) as browser:

            def now_waiting() -> list[Advert]:
                return sorted(browser.adverts.values(), key=lambda a: (a.since, a.name))

            if once is not None:
                deadline = loop.time() + once
                while await browser.wait_changed(deadline - loop.time()):
                    pass
                return now_waiting()
            while True:
                show(now_waiting())
                await browser.wait_changed(1.0)
    finally:
        await zeroconf.async_close()


async def check_network(server_url: str, options: PeerOptions) -> Report:
    """`sfs check`: the signaling server, STUN, the NAT and TURN, as seen from here."""
    from sfs.check import check

    return await check(server_url, connect_timeout=options.connect_timeout, ca_file=options.ca_file)


@dataclass(frozen=True)
class Session:
    """An open, authenticated channel to the peer (a proven TCP connection or the
    DataChannel(s)), and the session keys of that transport."""

    channel: Channel
    keys: SessionKeys


@asynccontextmanager
async def sender_session(
    code: Code | None,
    options: PeerOptions,
    ui: Ui,
    *,
    streams: int | None = 1,
    link: bool = False,
) -> AsyncIterator[Session]:
    """Find the receiver of ``code`` (or, with no code, show one and wait for the
    receiver to come), agree on keys, and open the DataChannel(s).

    :param streams: peer connections to stripe over (the receiver may accept fewer);
        None chooses from the round trip measured during set-up.
    :param link: show a code with a link to the web page that receives with it.
    """
    async with _session(Role.SENDER, code, options, ui, streams=streams, link=link) as session:
        yield session


@asynccontextmanager
async def receiver_session(
    options: PeerOptions, ui: Ui, *, code: Code | None = None, link: bool = False
) -> AsyncIterator[Session]:
    """Show a code and wait for the sender (or, given the sender's ``code``, join it),
    agree on keys, and open the DataChannel.

    :param link: show a code with a link to the web page that sends with it.
    """
    async with _session(Role.RECEIVER, code, options, ui, link=link) as session:
        yield session


@asynccontextmanager
async def _session(
    role: Role,
    code: Code | None,
    options: PeerOptions,
    ui: Ui,
    *,
    streams: int | None = 1,
    link: bool = False,
) -> AsyncIterator[Session]:
    """:param link: show the code (if this side shows one) with a link to the web
    page: the server's, if it serves one; in LAN mode, this side's embedded server's,
    which then serves the page."""
    addresses = check_local_addresses(options.ice_addresses)
    preload_transports(server=role is Role.RECEIVER)

    handshake = functools.partial(
        Handshake,
        role,
        code=code,
        connect_timeout=options.connect_timeout,
        ice_servers=options.ice_servers,
        streams=streams,
    )

    async with AsyncExitStack() as stack:
        if options.server_url is not None:
            page = None
            if (
                link
                and code is None
                and await serves_page(options.server_url, ca_file=options.ca_file)
            ):
                page = options.server_url
            ui.status(f"Connecting via {options.server_url}…")
            session = await _set_up(
                stack, handshake(), options.server_url, options, ui, addresses, page=page
            )
        elif code is None:
            session = await _wait_on_lan(
                stack, handshake(), role, options, ui, addresses, page=link
            )
        else:
            session = await _join_on_lan(
                stack, handshake(), code.peer_id, role, options, ui, addresses
            )
        del code, handshake  # the secret words: not needed any more
        yield session


async def send(config: SendConfig, ui: Ui) -> TransferResult:
    """Send files to the receiver that printed ``config.code``."""
    # Every check of what to send is made now, not after connecting: that would
    # spend the receiver's code.
    if config.text is not None:
        tree = Sources([text_source(config.text)])
    elif config.stream is not None:
        tree = Sources([stream_source(config.stream, config.stream_name)])
    else:
        tree = inspect_tree(list(config.paths))
    sources = tree.files
    if len(sources) + len(tree.folders) > MAX_ENTRIES:
        raise SourceError(
            f"sfs sends at most {MAX_ENTRIES} files and folders at once "
            f"({len(sources) + len(tree.folders)} given)"
        )
    for skipped in tree.skipped:
        ui.status(f"Skipping {skipped}")
    async with sender_session(
        config.code, config.peer, ui, streams=config.streams, link=config.link
    ) as session:
        channel = session.channel
        proto = TransferProtocol(Role.SENDER, session.keys)
        await _verify(ui, channel, proto, session.keys, ask=config.verify)
        wanted = config.chunk_size or channel.preferred_chunk_size
        chunk_size = min(wanted, channel.max_message_size - FRAME_OVERHEAD_BYTES)
        if chunk_size < wanted:
            logger.info("chunk size lowered to %d: the receiver's message limit", chunk_size)
        # Having received the last message (the final acknowledgement), the sender
        # closes first; see CLOSE_GRACE_SECONDS.
        result = await send_files(
            channel,
            proto,
            sources,
            sender=config.sender_name,
            chunk_size=chunk_size,
            progress=ui.progress(),
            on_waiting=lambda: ui.status("Waiting for the receiver to accept…"),
            resume=config.resume,
            status=ui.status,
            folders=tree.folders,
            compress=config.compress,
        )
        result.route = str(channel.route or "")
        _log_result("sent", result)
        return result


async def receive(config: ReceiveConfig, ui: Ui) -> TransferResult:
    """Get a code from the server, show it, and receive what the sender offers."""
    # Checked before a code is shown: a sender that connects to a receiver that cannot
    # write has spent the code for nothing.
    if not config.output_dir.is_dir():
        raise DiskError(f"the output folder {str(config.output_dir)!r} does not exist")
    if not os.access(config.output_dir, os.W_OK | os.X_OK):
        raise DiskError(f"the output folder {str(config.output_dir)!r} is not writable")
    async with receiver_session(config.peer, ui, code=config.code, link=config.link) as session:
        proto = TransferProtocol(Role.RECEIVER, session.keys)
        await _verify(ui, session.channel, proto, session.keys, ask=config.verify)
        result = await receive_files(
            session.channel,
            proto,
            output_dir=config.output_dir,
            overwrite=config.overwrite,
            decide=ui.decide,
            progress=ui.progress(),
            resume=config.resume,
            status=ui.status,
            kept=ui.kept_partial,
            sink=config.sink,
        )
        result.route = str(session.channel.route or "")
        _log_result("received", result)
        await linger(session.channel, CLOSE_GRACE_SECONDS)
        return result


def _log_result(verb: str, result: TransferResult) -> None:
    # Precise figures for scripts/bench, which reads them at -v.
    logger.info("%s %d bytes in %.6f s", verb, result.total_bytes, result.elapsed)


async def _verify(
    ui: Ui, channel: Channel, proto: TransferProtocol, keys: SessionKeys, *, ask: bool
) -> None:
    """Show the verification string; with ``ask`` (--verify), have the user compare the
    strings before any offer moves.

    Every side shows it, as the web page does, so either side may compare whatever
    the other runs; only --verify waits for an answer.

    Both sides ask as soon as their channel is open, so each shows its string at
    once: neither user is asked to compare with a string the other side does not show
    yet. Keepalives run meanwhile: a user who takes a while to compare must not look
    like a lost connection to the other side.
    """
    if not ask:
        ui.status(f"Verification: {keys.verifier} (the other side shows the same)")
        return
    pump = Pump(channel, Conversation(proto, time.monotonic()))
    try:
        if not await pump.serve(ui.confirm_verifier(keys.verifier)):
            raise VerificationError()
    except VerificationError as exc:
        await pump.abort(exc)
        raise


def preload_transports(*, server: bool) -> None:
    """Import aiortc (and qh3, for QUIC) in a thread, once per process.

    :param server: this side would be QUIC's server (the receiver).

    Importing them takes half a second of CPU or more, and the set-up needs them
    only for the offer or the answer: until then it waits on the network (the
    server, the other side's SPAKE2), and the thread fills those waits. Whoever
    imports sfs.peer.transport.webrtc meanwhile waits for the thread's import to
    finish (Python's per-module import lock); an import that fails in the thread is
    ignored here and fails again, with its error, where the module is used.
    (A prompt still waiting at exit once made this thread look guilty of a crash at
    shutdown; the prompt's reading was the cause: sfs.commands.prompts.)

    A process that ends before the thread is done (a refused offer, a wrong code)
    waits for it at exit, bounded: Python 3.11 ends a daemon thread still running at
    finalization with pthread_exit, and when that thread is inside Rust code that let
    go of the GIL (cryptography's or qh3's, through PyO3), the unwinding aborts the
    whole process ("FATAL: exception not rethrown", exit -6; seen in CI on a refused
    offer, where sfs had already said why and meant to exit 13).
    """
    global _preloading
    with _preload_lock:
        if _preloading is None:
            _preloading = threading.Thread(
                target=_import_transports, args=(server,), name="sfs-preload", daemon=True
            )
            _preloading.start()
            atexit.register(_preloading.join, PRELOAD_EXIT_WAIT_SECONDS)


_preload_lock = threading.Lock()
_preloading: threading.Thread | None = None

#: How long an exit waits for the preload thread (it needs a second at most on a busy
#: host; the bound only keeps a wedged import from holding the exit forever).
PRELOAD_EXIT_WAIT_SECONDS = 10.0


def _import_transports(server: bool) -> None:
    try:
        import sfs.peer.transport.webrtc  # noqa: F401

        logger.debug("aiortc loaded")
        if quic_available():
            load_qh3(server=server)
            logger.debug("qh3 loaded")
    except Exception:  # reported by the import that uses it
        logger.debug("preloading aiortc or qh3 failed", exc_info=True)
    # Not gc.freeze() here, though aiortc's objects would then leave the collector's
    # walks: by now the session's keys exist, and a frozen object in a reference cycle
    # is never freed (tests/integration/test_secrets.py).


# -- helpers --------------------------------------------------------------------------------


async def _set_up(
    stack: AsyncExitStack,
    handshake: Handshake,
    url: str,
    options: PeerOptions,
    ui: Ui,
    addresses: tuple[str, ...],
    *,
    registered: Callable[[str], Awaitable[None]] | None = None,
    page: str | None = None,
) -> Session:
    """Pump ``handshake`` between the signaling client at ``url`` and the peer
    connection(s).

    Everything the set-up decides is :class:`Handshake`'s; this only carries out its
    actions and feeds it what the server, the connection and the clock say.  The
    connections and the signaling client live on ``stack``.

    :param registered: awaited with each peer ID the server gives, before the code
        is shown (LAN mode advertises it).
    :param page: the web page to link each code shown to.
    """
    logger.debug("connecting to %s", url)
    signal = await stack.enter_async_context(_signal_client(url, options))
    logger.debug("connected to the server")
    pump = _SetUpPump(stack, handshake, url, options, ui, addresses, signal, registered, page)
    return await pump.run()


class _SetUpPump:
    """What :func:`_set_up` holds while it pumps: the signaling client (a new one after
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
        signal: SignalClient,
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
        #: QUIC on the WebRTC path, offered in the sealed description (SFS_QUIC=0
        #: leaves it out, for measuring the DataChannel).
        self.offers_quic = (
            options.transport is not Transport.TCP
            and not self.relay_only
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
        registration = await self.signal.register()
        logger.debug("registered")
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
        tcp = None
        if self.wants_tcp:
            self.direct = _direct_path(
                self.stack, sender=True, keys=action.keys, hosts=self._tcp_hosts()
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
                self.stack, sender=False, keys=action.keys, hosts=self._tcp_hosts()
            )
        if self.direct is not None and action.tcp is not None:
            # Dialing the sender's listeners while ours start and the answer
            # travels: on a LAN the connection is proven before it arrives.
            if not self.relay_only:
                self.direct.dial(action.tcp)
            tcp = await self.direct.listen()
        answers = await self.links.answer_offers(_descriptions("offer", action.sdps))
        self.keys = action.keys
        self.pending.append(
            LocalDescription(tuple(d["sdp"] for d in answers), tcp, quic=self.offers_quic)
        )

    def _ice(self, action: CreateOffers | AnswerOffers) -> tuple[IceServer, ...]:
        # With --relay only, WebRTC is never opened: no STUN or TURN to ask.
        return () if self.relay_only else action.ice_servers

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
                                  ca_file=self.options.ca_file),
                delay=0.0 if self.relay_only else RELAY_HEAD_START_SECONDS,
                sole=self.relay_only,
            )  # fmt: skip
        elif self.relay_only:
            raise PeerConnectionError(
                "the other side takes no relay (--relay only): an older sfs, or --relay never"
            )
        datachannel = functools.partial(links.open, self.options.connect_timeout)
        sender = self.handshake.role is Role.SENDER
        quic = None
        if action.quic and not self.relay_only:
            assert self.keys is not None
            quic = self._quic_opener(links, self.keys, sender=sender)
        self.opener = asyncio.ensure_future(
            open_transport(
                sender=sender,
                transport=self.options.transport,
                direct=direct,
                datachannel=None if self.relay_only else datachannel,
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
        if opened.quic:
            # The QUIC stream runs the TCP path's frames; the peer connection carries it.
            return Session(opened.channel, action.keys.over_tcp())
        if opened.tcp is None:
            return Session(opened.channel, action.keys)
        # aiortc's ICE and DTLS would go on spending CPU beside the transfer: closed
        # now, but not waited for (a third of a second on the long link) before the
        # first frame goes; the session's end waits for it.
        closing = asyncio.ensure_future(self.links.close())
        self.stack.push_async_callback(_finish_closing, closing)
        self.stack.callback(opened.tcp.close)
        return Session(opened.channel, action.keys.over_tcp())


async def _finish_closing(closing: asyncio.Future[None]) -> None:
    """Wait for the unused peer connections to close; a failure to close them does not
    turn a transfer into a failure."""
    try:
        await closing
    except Exception:  # aiortc's own errors too: the transfer is what counts
        logger.debug("closing the unused peer connections failed", exc_info=True)


async def _wait_on_lan(
    stack: AsyncExitStack,
    handshake: Handshake,
    role: Role,
    options: PeerOptions,
    ui: Ui,
    addresses: tuple[str, ...],
    *,
    page: bool = False,
) -> Session:
    """LAN mode, the side that shows the code: run the signaling server here,
    advertise it on mDNS under the peer ID it gives, and wait.  Both go once the
    channel is open (the peers talk directly; nobody else should find this code).

    :param page: the embedded server serves the browser page too, and the code is
        shown with a link to it (on the address of the default route's interface;
        every other one is logged), so a phone with no app and no server can join.
    """
    from sfs.lan.discovery import advertise, default_route_address, find_lan, open_zeroconf
    from sfs.lan.embedded import EMBEDDED_CONFIG, EMBEDDED_PAGE_CONFIG, embedded_server
    from sfs.lan.record import page_urls

    lan = find_lan()
    rendezvous = AsyncExitStack()
    try:
        embedded = await rendezvous.enter_async_context(
            embedded_server(role.value, EMBEDDED_PAGE_CONFIG if page else EMBEDDED_CONFIG)
        )
        urls = page_urls(lan.addresses, embedded.port, default_route_address()) if page else ()
        for url in urls:
            logger.info("the page is at %s", url)
        zeroconf = open_zeroconf(lan)
        rendezvous.push_async_callback(zeroconf.async_close)
        adverts = await rendezvous.enter_async_context(AsyncExitStack())
        since = int(time.time())

        async def registered(peer_id: str) -> None:
            await adverts.aclose()  # a new peer ID (the server was lost): the old one goes
            embedded.holding.peer_id = peer_id  # what probes now prove
            advert = Advert(role.value, options.name, embedded.port, lan.addresses, since)
            await adverts.enter_async_context(advertise(zeroconf, advert))

        ui.status("On the local network (no server; for other networks use --server)")
        session = await _set_up(
            stack,
            handshake,
            embedded.local_url,
            options,
            ui,
            addresses,
            registered=registered,
            page=urls[0] if urls else None,
        )
    except BaseException:
        await rendezvous.aclose()
        raise
    # The goodbye packets take a quarter of a second: sent while the transfer starts,
    # not before (the session waits for them at its end).
    withdrawing = asyncio.ensure_future(rendezvous.aclose())
    stack.push_async_callback(_finish_withdrawing, withdrawing)
    return session


async def _finish_withdrawing(withdrawing: asyncio.Future[None]) -> None:
    """Wait a little for the record and the embedded server to go: a slow goodbye
    must never turn a finished transfer into a failure."""
    from sfs.lan.discovery import GOODBYE_SECONDS

    try:
        await asyncio.wait_for(withdrawing, GOODBYE_SECONDS + 1)
    except (TimeoutError, OSError, SfsError):
        logger.debug("withdrawing the LAN record did not finish cleanly", exc_info=True)


async def _join_on_lan(
    stack: AsyncExitStack,
    handshake: Handshake,
    peer_id: str,
    role: Role,
    options: PeerOptions,
    ui: Ui,
    addresses: tuple[str, ...],
) -> Session:
    """LAN mode, the side that typed the code: find the endpoint that holds
    ``peer_id`` and set up through its signaling server.

    Records are untrusted and do not name the ID: every endpoint of a waiting peer
    of the right role is asked at once whether it holds the ID, and the code's key
    exchange runs with the one that proved it, once (see :mod:`sfs.lan.record`).
    """
    from sfs.lan.discovery import Browser, find_holder, find_lan, open_zeroconf

    lan = find_lan()
    waiting = Role.RECEIVER if role is Role.SENDER else Role.SENDER
    ui.status(f"Looking for {peer_id} on the local network…")
    zeroconf = open_zeroconf(lan)
    try:
        async with Browser(zeroconf) as browser:
            holder = await find_holder(
                browser, peer_id=peer_id, waiting_role=waiting.value, within=options.find_timeout
            )
    finally:
        await zeroconf.async_close()
    assert holder.host is not None
    ui.status(f"Found {peer_id} at {holder.host} ({holder.advert.name or 'no name'})")
    url = signaling_url(holder.host, holder.advert.port)
    return await _set_up(stack, handshake, url, options, ui, addresses)


async def _next_input(
    signal: SignalClient,
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


async def _calls(signal: SignalClient, calls: list[Call]) -> None:
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


async def _call(signal: SignalClient, call: Call) -> None:
    if not call.best_effort:
        await signal.call(call.event, call.payload)
        return
    try:
        await signal.call(call.event, call.payload)
    except SfsError:
        logger.debug("could not tell the other side (%s)", call.event, exc_info=True)


async def _tell_partner(signal: SignalClient, actions: list[Action]) -> None:
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


def _direct_path(
    stack: AsyncExitStack, *, sender: bool, keys: SessionKeys, hosts: tuple[str, ...]
) -> DirectPath:
    """The direct TCP path of this session on ``hosts``, closed with the rest of the set-up."""
    direct = DirectPath(sender=sender, keys=keys, hosts=hosts)
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
    return SignalClient(url, connect_timeout=options.connect_timeout, ca_file=options.ca_file)


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
