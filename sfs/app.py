"""The jobs of sfs as coroutines: serve, receive, send (to one receiver or, with
``--many``, to several), pair.

The CLI and the tests call these.  They wire the pieces together: meeting the other
side, through a server or on the LAN, is :mod:`sfs.meeting` (whose set-up, pairing,
SPAKE2 and the sealed offer/answer, is :class:`sfs.peer.proto.handshake.Handshake`,
pumped by :func:`sfs.setup.set_up`); then :mod:`sfs.peer.sending` or
:mod:`sfs.peer.receiving` moves the files, and :mod:`sfs.reconnect` carries a session
over an outage.  Nothing here prints; what the user sees goes through a :class:`Ui`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sfs.code import Code, new_secret
from sfs.defaults import LAN_FIND_SECONDS as LAN_FIND_SECONDS
from sfs.errors import (
    DiskError,
    RemoteProtocolError,
    SourceError,
    VerificationError,
)
from sfs.lan.record import Advert
from sfs.meeting import (
    connect_again,
    meet,
    open_lobby,
)
from sfs.meeting import paired_sender_session as paired_sender_session
from sfs.meeting import preload_transports as preload_transports
from sfs.meeting import receiver_session as receiver_session
from sfs.meeting import sender_session as sender_session
from sfs.pairs import Pair, PairStore, device_name
from sfs.peer.files.exclusion import LeaveOut
from sfs.peer.files.sources import Sources, inspect_tree, stream_source, text_source
from sfs.peer.proto.conversation import Conversation
from sfs.peer.proto.crypto import (
    FRAME_OVERHEAD_BYTES,
    SessionKeys,
    pair_fingerprint,
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
from sfs.reconnect import (
    Outages,
    meet_again,
    surviving,
)
from sfs.setup import PeerOptions as PeerOptions
from sfs.setup import Session as Session
from sfs.setup import Ui as Ui
from sfs.setup import set_up
from sfs.signal.client import page_link
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
        connect_again(Role.SENDER, config.peer),
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
        lobby, registration, url, page = await open_lobby(
            stack, config.peer, ui, many=config.many, link=config.link
        )
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
            Role.RECEIVER, outages, peer, ui, connect_again(Role.RECEIVER, peer)
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

    # Not gc.freeze() here, though aiortc's objects would then leave the collector's
    # walks: by now the session's keys exist, and a frozen object in a reference cycle
    # is never freed (tests/integration/test_secrets.py).


# -- LAN mode -----------------------------------------------------------------------------


# -- trusted devices (`sfs pair`) ---------------------------------------------------------


async def pair(config: PairConfig, ui: Ui) -> Paired:
    """`sfs pair`: the code's set-up, exactly as a transfer's (one guess), each side
    sealing the name it gives itself; then both keep the other's name and the secret
    of this session's SPAKE2 key (``SessionKeys.pairing``). Nothing is kept unless the
    whole set-up succeeded: a wrong code stores nothing."""
    role = Role.RECEIVER if config.code is None else Role.SENDER
    options = dataclasses.replace(config.peer, reconnect_window=0.0)
    async with meet(
        role, config.code, options, ui, link=config.link, pairing=config.name
    ) as session:
        name = device_name(session.pair_name or "")
        secret = session.keys.pairing
        replaced = config.store.add(Pair(name, secret, time.time()))
        await linger(session.channel, 0.2)
    return Paired(name, pair_fingerprint(secret), replaced)
