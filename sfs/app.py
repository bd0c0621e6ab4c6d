"""The three jobs of sfs as coroutines: serve, receive, send.

The CLI and the tests call these.  They wire the pieces together: the set-up
(pairing, SPAKE2, the sealed offer/answer) is :class:`sfs.peer.proto.handshake.Handshake`,
which :func:`sfs.setup.set_up` pumps between the signaling client (a server's, or
in LAN mode the embedded one this module runs or finds) and the peer connections;
then :mod:`sfs.peer.sending` or :mod:`sfs.peer.receiving` moves the files.  Nothing
here prints; what the user sees goes through a :class:`Ui`.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sfs.code import Code, new_secret
from sfs.defaults import LAN_FIND_SECONDS as LAN_FIND_SECONDS
from sfs.defaults import Transport
from sfs.errors import (
    CodeNotFoundError,
    DiskError,
    PeerConnectionError,
    RemoteProtocolError,
    SfsError,
    SignalingError,
    SourceError,
    VerificationError,
    WrongCodeError,
)
from sfs.lan.record import Advert, signaling_url
from sfs.pairs import Pair, PairStore, device_name
from sfs.peer.files.exclusion import LeaveOut
from sfs.peer.files.sources import Sources, inspect_tree, stream_source, text_source
from sfs.peer.proto.conversation import Conversation
from sfs.peer.proto.crypto import (
    FRAME_OVERHEAD_BYTES,
    PAIR_PERIOD_SECONDS,
    SessionKeys,
    pair_code,
    pair_fingerprint,
    pair_period,
)
from sfs.peer.proto.framing import Role, TransferProtocol
from sfs.peer.proto.handshake import (
    Handshake,
)
from sfs.peer.proto.wire import MAX_ENTRIES, Offer
from sfs.peer.receiving import receive_files
from sfs.peer.sending import send_files
from sfs.peer.transfer import Pump, TransferResult, linger
from sfs.peer.transport.addresses import check_local_addresses
from sfs.peer.transport.channel import Channel
from sfs.peer.transport.quic import load_qh3, quic_available
from sfs.reconnect import (
    Connect,
    Outages,
    Quiet,
    meet_again,
    surviving,
)
from sfs.setup import PeerOptions as PeerOptions
from sfs.setup import Session as Session
from sfs.setup import Ui as Ui
from sfs.setup import set_up
from sfs.signal.client import Registration, SignalClient, page_link, serves_page
from sfs.text import format_size

if TYPE_CHECKING:
    # What a transfer does not need is imported where it is used: LAN mode (zeroconf,
    # the embedded server), `sfs serve` and `sfs check` cost a transfer's start-up a
    # tenth of a second or more, and aiortc and qh3 come from preload_transports.
    from sfs.check import Report
    from sfs.many import ManyResult, ManyUi, PartnerSignal
    from sfs.peer.files.destinations import Plan
    from sfs.signal.config import ServerConfig

logger = logging.getLogger(__name__)

#: After its last acknowledgement, the receiver waits this long for the sender to
#: close, so that acknowledgement is not lost with a connection torn down too early.
CLOSE_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class SendConfig:
    """:param code: the receiver's code; ``None`` prints a code here and waits for
    ``sfs receive CODE`` (the sender-first flow)."""

    code: Code | None
    paths: tuple[Path, ...]
    peer: PeerOptions = field(default_factory=PeerOptions)
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
    #: What named folders leave out (--exclude, --gitignore).
    leave_out: LeaveOut | None = None
    #: --limit-rate: file data at no more than this many bytes a second.
    limit_rate: float | None = None
    #: Send to this paired device (`sfs send @NAME`), with no code; ``code`` is None.
    to_pair: Pair | None = None
    #: Where to note when a paired device was last seen.
    pair_store: PairStore | None = None
    #: `sfs send --many N`: show one code that serves up to N receivers (``code`` is
    #: None); 0: one receiver.
    many: int = 0


@dataclass(frozen=True)
class ReceiveConfig:
    """:param code: the sender's code (``sfs send --print-code``) to join; ``None``
    prints a code here and waits for the sender (the receiver-first flow)."""

    output_dir: Path = Path(".")
    overwrite: bool = False
    peer: PeerOptions = field(default_factory=PeerOptions)
    verify: bool = False
    resume: bool = True
    code: Code | None = None
    #: Write the one offered file or pipe here (``--stdout``), not into output_dir.
    sink: IO[bytes] | None = None
    #: Show the code with a link to the web page (--qr, --json): the server's, if it
    #: serves one; in LAN mode, the embedded server's.
    link: bool = False
    #: Paired devices to wait for beside the code (when this side shows one), and
    #: where to note when each was last seen.
    pairs: tuple[Pair, ...] = ()
    pair_store: PairStore | None = None
    #: --limit-rate: file data at no more than this many bytes a second.
    limit_rate: float | None = None


@dataclass(frozen=True)
class PairConfig:
    """`sfs pair`: with ``code``, join the device that shows it; else show one.

    :param name: the name this device gives itself (the other keeps it).
    """

    code: Code | None
    name: str
    store: PairStore
    peer: PeerOptions = field(default_factory=PeerOptions)
    link: bool = False


@dataclass(frozen=True)
class Paired:
    """What `sfs pair` made: the other device's name (as kept here) and the pair's
    fingerprint, the same on both devices."""

    name: str
    fingerprint: str
    replaced: bool


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
    options: PeerOptions,
    ui: Ui,
    *,
    code: Code | None = None,
    link: bool = False,
    pairs: tuple[Pair, ...] = (),
) -> AsyncIterator[Session]:
    """Show a code and wait for the sender (or, given the sender's ``code``, join it),
    agree on keys, and open the DataChannel.

    :param link: show a code with a link to the web page that sends with it.
    :param pairs: paired devices to wait for too, each at its rendezvous (when this
        side shows a code): the first to come, by code or by pair, is the session.
    """
    async with _session(Role.RECEIVER, code, options, ui, link=link, pairs=pairs) as session:
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
    pairing: str | None = None,
    pairs: tuple[Pair, ...] = (),
) -> AsyncIterator[Session]:
    """:param link: show the code (if this side shows one) with a link to the web
    page: the server's, if it serves one; in LAN mode, this side's embedded server's,
    which then serves the page.
    :param pairing: this session pairs the devices (`sfs pair`): this side's name.
    :param pairs: (a receiver showing a code) paired devices to wait for too."""
    addresses = check_local_addresses(options.ice_addresses)
    preload_transports(server=role is Role.RECEIVER)
    if code is not None or role is not Role.RECEIVER:
        pairs = ()

    handshake = functools.partial(
        Handshake,
        role,
        code=code,
        connect_timeout=options.connect_timeout,
        ice_servers=options.ice_servers,
        streams=streams,
        reconnects=options.reconnect_window > 0,
        pairing=pairing,
    )

    async with AsyncExitStack() as stack:
        if options.server_url is not None:
            page = None
            if (
                link
                and code is None
                and await serves_page(
                    options.server_url, ca_file=options.ca_file, proxy=options.proxy
                )
            ):
                page = options.server_url
            ui.status(f"Connecting via {options.server_url}…")
            _say_proxy(ui, options)
            url, machine = options.server_url, handshake()
            session = await _code_or_pairs(
                stack,
                lambda own: set_up(own, machine, url, options, ui, addresses, page=page),
                url,
                pairs,
                options,
                ui,
                addresses,
            )
        elif code is None:
            session = await _wait_on_lan(
                stack, handshake(), role, options, ui, addresses, page=link, pairs=pairs
            )
        else:
            session = await _join_on_lan(
                stack, handshake(), code.peer_id, role, options, ui, addresses
            )
        del code, handshake  # the secret words: not needed any more
        yield session


async def send(config: SendConfig, ui: Ui) -> TransferResult:
    """Send files to the receiver that printed ``config.code``."""
    tree = _what_to_send(config, ui)
    peer = config.peer
    if config.stream is not None:
        # A pipe cannot be read again: after an outage there is nothing to resume from,
        # so this side does not offer to wait for one.
        peer = dataclasses.replace(peer, reconnect_window=0.0)
    outages = Outages(peer.reconnect_window)
    return await surviving(
        outages,
        ui,
        first=lambda: (
            sender_session(config.code, peer, ui, streams=config.streams, link=config.link)
            if config.to_pair is None
            else paired_sender_session(config.to_pair, peer, ui, streams=config.streams)
        ),
        again=lambda: _sender_again(outages, config, ui),
        transfer=lambda session: _send_over(session, config, ui, tree, outages),
    )


def _sender_again(outages: Outages, config: SendConfig, ui: Ui) -> AsyncContextManager[Session]:
    return meet_again(
        Role.SENDER,
        outages,
        config.peer,
        ui,
        _connect_again(Role.SENDER, config.peer),
        streams=config.streams,
    )


async def send_many(config: SendConfig, ui: ManyUi) -> ManyResult:
    """`sfs send --many N`: show one code, and send to each of up to N receivers that
    come with it (sfs.many), each its own session."""
    from sfs.many import serve_many

    assert config.code is None
    assert config.stream is None
    tree = _what_to_send(config, ui)
    options = config.peer
    addresses = check_local_addresses(options.ice_addresses)
    preload_transports(server=False)
    async with AsyncExitStack() as stack:
        lobby, registration, url, page = await _open_lobby(stack, config, ui)
        words = new_secret()
        code = str(Code(registration.peer_id, words))
        ui.show_code(code, None if page is None else page_link(page, code, receive=True))

        async def serve_one(number: int, partner: PartnerSignal) -> TransferResult:
            mine = ui.receiver(number)
            outages = Outages(options.reconnect_window)

            @asynccontextmanager
            async def first() -> AsyncIterator[Session]:
                handshake = Handshake(
                    Role.SENDER,
                    connect_timeout=options.connect_timeout,
                    ice_servers=options.ice_servers,
                    streams=config.streams,
                    new_words=lambda: words,
                    reconnects=options.reconnect_window > 0,
                )
                async with AsyncExitStack() as own:
                    yield await set_up(
                        own, handshake, url, options, mine, addresses, signal=partner
                    )

            return await surviving(
                outages,
                mine,
                first=first,
                again=lambda: _sender_again(outages, config, mine),
                transfer=lambda session: _send_over(session, config, mine, tree, outages),
            )

        return await serve_many(lobby, registration, config.many, ui, serve_one)


async def _open_lobby(
    stack: AsyncExitStack, config: SendConfig, ui: Ui
) -> tuple[SignalClient, Registration, str, str | None]:
    """`sfs send --many`: the one server connection, registered for ``many``, that
    every receiver asks: (it, its registration, the server's URL, the page's URL to
    link the code to).  In LAN mode the server is this side's embedded one, advertised
    on mDNS as a waiting sender's, until the last receiver is served."""
    options = config.peer
    url, page = options.server_url, None
    if url is not None:
        ui.status(f"Connecting via {url}…")
        _say_proxy(ui, options)
        if config.link and await serves_page(url, ca_file=options.ca_file, proxy=options.proxy):
            page = url
        lobby = await stack.enter_async_context(
            SignalClient(
                url,
                connect_timeout=options.connect_timeout,
                ca_file=options.ca_file,
                proxy=options.proxy,
            )
        )
        return lobby, await lobby.register(many=config.many), url, page
    from sfs.lan.discovery import advertise, default_route_address, find_lan, open_zeroconf
    from sfs.lan.embedded import EMBEDDED_CONFIG, EMBEDDED_PAGE_CONFIG, embedded_server
    from sfs.lan.record import page_urls

    lan = find_lan()
    embedded = await stack.enter_async_context(
        embedded_server(Role.SENDER.value, EMBEDDED_PAGE_CONFIG if config.link else EMBEDDED_CONFIG)
    )
    if config.link:
        urls = page_urls(lan.addresses, embedded.port, default_route_address())
        page = urls[0] if urls else None
    zeroconf = open_zeroconf(lan)
    stack.push_async_callback(zeroconf.async_close)
    ui.status("On the local network (no server; for other networks use --server)")
    lobby = await stack.enter_async_context(
        SignalClient(embedded.local_url, connect_timeout=options.connect_timeout)
    )
    registration = await lobby.register(many=config.many)
    embedded.holding.peer_id = registration.peer_id  # what probes now prove
    advert = Advert(Role.SENDER.value, options.name, embedded.port, lan.addresses, int(time.time()))
    await stack.enter_async_context(advertise(zeroconf, advert))
    return lobby, registration, embedded.local_url, page


def _what_to_send(config: SendConfig, ui: Ui) -> Sources:
    """What `sfs send` sends, checked (and what was left out or skipped said) before
    any connection: a failure after one would spend the code."""
    if config.text is not None:
        tree = Sources([text_source(config.text)])
    elif config.stream is not None:
        tree = Sources([stream_source(config.stream, config.stream_name)])
    else:
        tree = inspect_tree(list(config.paths), config.leave_out)
        if any(tree.left_out):
            ui.status(f"Left out {_counted(*tree.left_out)} (--exclude, --gitignore)")
    sources = tree.files
    _say_limit(ui, config.limit_rate)
    if len(sources) + len(tree.folders) > MAX_ENTRIES:
        raise SourceError(
            f"sfs sends at most {MAX_ENTRIES} files and folders at once "
            f"({len(sources) + len(tree.folders)} given)"
        )
    for skipped in tree.skipped:
        ui.status(f"Skipping {skipped}")
    return tree


def _say_proxy(ui: Ui, options: PeerOptions) -> None:
    if options.proxy is None:
        return
    if options.transport is Transport.DATACHANNEL:
        ui.status(
            f"Signaling through the proxy {options.proxy}; WebRTC (--transport "
            "datachannel) goes around it, over UDP"
        )
    else:
        ui.status(
            f"Through the proxy {options.proxy}: no UDP (no WebRTC); the direct TCP "
            "path and the server's relay only"
        )


def _say_limit(ui: Ui, limit_rate: float | None) -> None:
    if limit_rate is not None:
        ui.status(f"File data moves at {format_size(limit_rate)}/s at most (--limit-rate)")


def _counted(files: int, folders: int) -> str:
    said = [
        f"{n} {what}{'' if n == 1 else 's'}"
        for n, what in ((files, "file"), (folders, "folder"))
        if n
    ]
    return " and ".join(said)


def _connect_again(role: Role, options: PeerOptions) -> Connect:
    """How a session that lost its connection reaches the other side again: the same
    server, or in LAN mode the same way a code is found (the receiver advertises the
    rendezvous ID, the sender probes for it)."""

    async def connect(stack: AsyncExitStack, handshake: Handshake, ui: Ui) -> Session:
        addresses = check_local_addresses(options.ice_addresses)
        if options.server_url is not None:
            return await set_up(stack, handshake, options.server_url, options, ui, addresses)
        if handshake.waits:
            return await _wait_on_lan(stack, handshake, role, options, ui, addresses)
        assert handshake.partner is not None
        return await _join_on_lan(stack, handshake, handshake.partner, role, options, ui, addresses)

    return connect


async def _send_over(
    session: Session, config: SendConfig, ui: Ui, tree: Sources, outages: Outages
) -> TransferResult:
    """One session's part of `sfs send`: the first, or one after an outage."""
    channel = session.channel
    proto = TransferProtocol(Role.SENDER, session.keys)
    if outages.secret:
        ui.reconnected(str(channel.route or ""))
    else:
        if session.paired_with is not None and config.pair_store is not None:
            config.pair_store.seen(session.paired_with)
        await _verify(ui, channel, proto, session.keys, ask=config.verify)
        # From here on (verified, if asked), an outage is waited out.
        if session.reconnects:
            outages.secret = session.keys.reconnect
    wanted = config.chunk_size or channel.preferred_chunk_size
    chunk_size = min(wanted, channel.max_message_size - FRAME_OVERHEAD_BYTES)
    if chunk_size < wanted:
        logger.info("chunk size lowered to %d: the receiver's message limit", chunk_size)
    # Having received the last message (the final acknowledgement), the sender
    # closes first; see CLOSE_GRACE_SECONDS.
    result = await send_files(
        channel,
        proto,
        tree.files,
        sender=config.sender_name,
        chunk_size=chunk_size,
        progress=ui.progress(),
        on_waiting=lambda: ui.status("Waiting for the receiver to accept…"),
        # After an outage the receiver holds what arrived: only the rest is sent.
        resume=config.resume or outages.count > 0,
        status=ui.status,
        folders=tree.folders,
        compress=config.compress,
        limit_rate=config.limit_rate,
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
    _say_limit(ui, config.limit_rate)
    peer = config.peer
    if config.sink is not None:
        # What went to stdout is gone: after an outage there is nothing to resume from.
        peer = dataclasses.replace(peer, reconnect_window=0.0)
    outages = Outages(peer.reconnect_window)
    accepted: list[Offer] = []
    return await surviving(
        outages,
        ui,
        first=lambda: receiver_session(
            peer, ui, code=config.code, link=config.link, pairs=config.pairs
        ),
        again=lambda: meet_again(
            Role.RECEIVER, outages, peer, ui, _connect_again(Role.RECEIVER, peer)
        ),
        transfer=lambda session: _receive_over(session, config, ui, outages, accepted),
    )


async def _receive_over(
    session: Session, config: ReceiveConfig, ui: Ui, outages: Outages, accepted: list[Offer]
) -> TransferResult:
    """One session's part of `sfs receive`: the first, or one after an outage."""
    proto = TransferProtocol(Role.RECEIVER, session.keys)
    if outages.secret:
        ui.reconnected(str(session.channel.route or ""))
    else:
        if session.paired_with is not None and config.pair_store is not None:
            config.pair_store.seen(session.paired_with)
        await _verify(ui, session.channel, proto, session.keys, ask=config.verify)
        # From here on (verified, if asked), an outage is waited out.
        if session.reconnects:
            outages.secret = session.keys.reconnect

    async def decide(offer: Offer, plan: Plan) -> bool:
        if not accepted:
            if await ui.decide(offer, plan, paired=session.paired_with):
                accepted.append(offer)
                return True
            return False
        # After an outage: the offer the user accepted, again, or nothing.
        if offer != accepted[0]:
            raise RemoteProtocolError(
                "after reconnecting, the other side offered something else than before"
            )
        return True

    result = await receive_files(
        session.channel,
        proto,
        output_dir=config.output_dir,
        overwrite=config.overwrite,
        decide=decide,
        progress=ui.progress(),
        resume=config.resume or outages.count > 0,
        status=ui.status,
        kept=ui.kept_partial,
        sink=config.sink,
        limit_rate=config.limit_rate,
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


# -- LAN mode -----------------------------------------------------------------------------


async def _wait_on_lan(
    stack: AsyncExitStack,
    handshake: Handshake,
    role: Role,
    options: PeerOptions,
    ui: Ui,
    addresses: tuple[str, ...],
    *,
    page: bool = False,
    pairs: tuple[Pair, ...] = (),
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
        # Paired devices find this side by a pair probe only they can read, then meet
        # at their pair's rendezvous on the embedded server.
        embedded.holding.pairs = [pair.secret for pair in pairs]
        session = await _code_or_pairs(
            stack,
            lambda own: set_up(
                own,
                handshake,
                embedded.local_url,
                options,
                ui,
                addresses,
                registered=registered,
                page=urls[0] if urls else None,
            ),
            embedded.local_url,
            pairs,
            options,
            ui,
            addresses,
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
    return await set_up(stack, handshake, url, options, ui, addresses)


# -- trusted devices (`sfs pair`) ---------------------------------------------------------

#: After a paired device's attempt at its rendezvous failed (someone else there, the
#: server lost), the wait there begins again after this long.
PAIR_RETRY_SECONDS = 1.0
#: Between a sender's rounds of lookups for a paired device not (yet) waiting.
PAIR_LOOKUP_PAUSE_SECONDS = 2.0


async def pair(config: PairConfig, ui: Ui) -> Paired:
    """`sfs pair`: the code's set-up, exactly as a transfer's (one guess), each side
    sealing the name it gives itself; then both keep the other's name and the secret
    of this session's SPAKE2 key (``SessionKeys.pairing``). Nothing is kept unless the
    whole set-up succeeded: a wrong code stores nothing."""
    role = Role.RECEIVER if config.code is None else Role.SENDER
    options = dataclasses.replace(config.peer, reconnect_window=0.0)
    async with _session(
        role, config.code, options, ui, link=config.link, pairing=config.name
    ) as session:
        name = device_name(session.pair_name or "")
        secret = session.keys.pairing
        replaced = config.store.add(Pair(name, secret, time.time()))
        await linger(session.channel, 0.2)
    return Paired(name, pair_fingerprint(secret), replaced)


async def _code_or_pairs(
    stack: AsyncExitStack,
    code_attempt: Callable[[AsyncExitStack], Awaitable[Session]],
    url: str,
    pairs: tuple[Pair, ...],
    options: PeerOptions,
    ui: Ui,
    addresses: tuple[str, ...],
) -> Session:
    """The code's set-up, and beside it a wait at each paired device's rendezvous on
    the same server: the first session set up is the one; the others end (a partner
    one of them had already met is told, as any cancelled set-up tells it).

    The code's failures end the wait, as without pairs; a paired device's attempt
    that fails (someone at its rendezvous without the secret, the server lost) only
    starts that wait again.
    """
    if not pairs:
        return await code_attempt(stack)
    names = ", ".join(f"@{pair.name}" for pair in pairs)
    ui.status(f"Paired devices need no code: waiting for {names} too")

    async def by_code() -> tuple[Session, AsyncExitStack]:
        own = AsyncExitStack()
        try:
            return await code_attempt(own), own
        except BaseException:
            await own.aclose()
            raise

    attempts: dict[asyncio.Future[tuple[Session, AsyncExitStack]], Pair | None] = {
        asyncio.ensure_future(by_code()): None
    }
    for each in pairs:
        attempts[asyncio.ensure_future(_wait_for_pair(each, url, options, ui, addresses))] = each
    winner: asyncio.Future[tuple[Session, AsyncExitStack]] | None = None
    try:
        done, _ = await asyncio.wait(attempts, return_when=asyncio.FIRST_COMPLETED)
        winner = next(iter(done))
        session, own = winner.result()
    finally:
        others = [a for a in attempts if a is not winner]
        for attempt in others:
            attempt.cancel()
        for outcome in await asyncio.gather(*others, return_exceptions=True):
            if isinstance(outcome, tuple):  # set up at the same moment: not this one
                await outcome[1].aclose()
    stack.push_async_callback(own.aclose)
    device = attempts[winner]
    if device is None:
        return session
    logger.info("paired device %s came", device.name)
    return dataclasses.replace(session, paired_with=device.name)


async def _wait_for_pair(
    device: Pair, url: str, options: PeerOptions, ui: Ui, addresses: tuple[str, ...]
) -> tuple[Session, AsyncExitStack]:
    """Wait at ``device``'s rendezvous of each period in turn until it comes: a fresh
    SPAKE2 on the pair's password for the period, so nobody without the secret gets
    further than a failed attempt (which changes nothing here but a new wait)."""
    quiet = Quiet(ui)
    while True:
        period = pair_period(time.time())
        rendezvous, password = pair_code(device.secret, period)
        handshake = Handshake(
            Role.RECEIVER,
            rendezvous=Code(rendezvous, password.decode("ascii")),
            connect_timeout=options.connect_timeout,
            ice_servers=options.ice_servers,
            reconnects=options.reconnect_window > 0,
        )
        own = AsyncExitStack()
        attempt = asyncio.ensure_future(set_up(own, handshake, url, options, quiet, addresses))
        period_ends = (period + 1) * PAIR_PERIOD_SECONDS
        try:
            # Until the period ends; past it, only while a device met there sets up.
            while not attempt.done():
                left = period_ends - time.time()
                await asyncio.wait({attempt}, timeout=max(left, 1.0))
                if not attempt.done() and not handshake.paired and time.time() >= period_ends:
                    attempt.cancel()
                    await asyncio.gather(attempt, return_exceptions=True)
                    break
            if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
                return attempt.result(), own
            if attempt.done() and not attempt.cancelled():
                error = attempt.exception()
                if not isinstance(
                    error, SignalingError | PeerConnectionError | WrongCodeError | OSError
                ):
                    assert error is not None
                    raise error
                logger.info("an attempt at %s's rendezvous failed: %s", device.name, error)
        except BaseException:
            attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)
            await own.aclose()
            raise
        await own.aclose()
        await asyncio.sleep(PAIR_RETRY_SECONDS)


@asynccontextmanager
async def paired_sender_session(
    device: Pair, options: PeerOptions, ui: Ui, *, streams: int | None = 1
) -> AsyncIterator[Session]:
    """Find the paired ``device`` waiting (`sfs receive`) and set up a session with it,
    with no code: at the pair's rendezvous of this period (or the nearer one beside it,
    for clocks that differ), by a fresh SPAKE2 on the pair's password.

    Through the server, the rendezvous IDs are asked for in turn; in LAN mode every
    waiting receiver is asked a pair probe, and the one that proves the pair says
    which period it waits in.
    """
    addresses = check_local_addresses(options.ice_addresses)
    preload_transports(server=False)

    def handshake(period: int) -> Handshake:
        rendezvous, password = pair_code(device.secret, period)
        return Handshake(
            Role.SENDER,
            code=Code(rendezvous, password.decode("ascii")),
            connect_timeout=options.connect_timeout,
            ice_servers=options.ice_servers,
            streams=streams,
            reconnects=options.reconnect_window > 0,
        )

    async with AsyncExitStack() as stack:
        try:
            if options.server_url is not None:
                ui.status(f"Connecting via {options.server_url}…")
                ui.status(f"Looking for {device.name} (paired)…")
                session = await _join_pair_by_server(
                    stack, device, handshake, options.server_url, options, ui, addresses
                )
            else:
                session = await _join_pair_on_lan(stack, device, handshake, options, ui, addresses)
        except WrongCodeError:
            # No code was typed: the pair's secret is right on this side, so the other
            # end of the exchange was not (only) the paired device.
            raise WrongCodeError(
                f"the key exchange with {device.name} failed: someone may be interfering "
                "(the server, or a device that is not it); nothing was sent"
            ) from None
        ui.status(f"Connected to {device.name} (paired)")
        yield dataclasses.replace(session, paired_with=device.name)


async def _join_pair_by_server(
    stack: AsyncExitStack,
    device: Pair,
    handshake: Callable[[int], Handshake],
    url: str,
    options: PeerOptions,
    ui: Ui,
    addresses: tuple[str, ...],
) -> Session:
    """Ask for the pair's rendezvous of this period and of the nearer one beside it
    (the clocks may differ by up to half a period), again for ``options.find_timeout``
    (the device may be starting `sfs receive` just now), as LAN mode looks for its
    records that long. Two lookups a round: a server counts them per address."""
    deadline = time.monotonic() + options.find_timeout
    while True:
        clock = time.time()
        now = pair_period(clock)
        nearer = now - 1 if clock % PAIR_PERIOD_SECONDS < PAIR_PERIOD_SECONDS / 2 else now + 1
        for period in (now, nearer):
            own = AsyncExitStack()
            try:
                session = await set_up(own, handshake(period), url, options, Quiet(ui), addresses)
            except CodeNotFoundError:
                await own.aclose()
                continue
            except BaseException:
                await own.aclose()
                raise
            stack.push_async_callback(own.aclose)
            return session
        if time.monotonic() >= deadline:
            raise CodeNotFoundError(
                f"{device.name} is not waiting: run `sfs receive` on it (through the same "
                "server); it waits for its paired devices beside its code"
            )
        await asyncio.sleep(PAIR_LOOKUP_PAUSE_SECONDS)


async def _join_pair_on_lan(
    stack: AsyncExitStack,
    device: Pair,
    handshake: Callable[[int], Handshake],
    options: PeerOptions,
    ui: Ui,
    addresses: tuple[str, ...],
) -> Session:
    from sfs.lan.discovery import Browser, find_lan, find_pair_holder, open_zeroconf

    lan = find_lan()
    ui.status(f"Looking for {device.name} (paired) on the local network…")
    zeroconf = open_zeroconf(lan)
    try:
        async with Browser(zeroconf) as browser:
            holder = await find_pair_holder(
                browser, secret=device.secret, name=device.name, within=options.find_timeout
            )
    finally:
        await zeroconf.async_close()
    ui.status(f"Found {device.name} at {holder.host}")
    url = signaling_url(holder.host, holder.port)
    return await set_up(stack, handshake(holder.period), url, options, Quiet(ui), addresses)
