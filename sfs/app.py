"""The three jobs of sfs as coroutines: serve, receive, send.

The CLI and the tests call these.  They wire the pieces together: the signaling
client finds the peer, :mod:`sfs.peer.crypto` agrees on keys through it, the sealed
offer/answer set up the aiortc connection, and :mod:`sfs.peer.transfer` moves the
files.  Nothing here prints; what the user sees goes through a :class:`Ui`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sfs.code import Code, new_secret
from sfs.errors import (
    DiskError,
    PeerGoneError,
    ServerLostError,
    ServerUnreachableError,
    SfsError,
    SignalingError,
    SourceError,
    VerificationError,
    WrongCodeError,
)
from sfs.peer.connection import (
    MAX_STREAMS,
    DataChannelLink,
    PeerLinks,
    StripedChannel,
    check_local_addresses,
)
from sfs.peer.crypto import (
    FRAME_OVERHEAD_BYTES,
    KeyExchange,
    SessionKeys,
    open_message,
    seal_message,
)
from sfs.peer.protocol import DEFAULT_CHUNK_BYTES, MAX_FILES, Offer, Role, TransferProtocol
from sfs.peer.transfer import (
    Channel,
    Progress,
    TransferResult,
    abort_transfer,
    inspect_sources,
    keepalive,
    linger,
    receive_files,
    send_files,
)
from sfs.signal.client import CANCELLED_REASON, SignalClient
from sfs.signal.messages import IceServer
from sfs.signal.server import ServerConfig, run_server

logger = logging.getLogger(__name__)

DEFAULT_SERVER_URL = "http://localhost:5000"
#: How long to wait for each step of the other side during set-up, and for ICE,
#: DTLS and SCTP once the offer and answer are exchanged (--connect-timeout).
CONNECT_TIMEOUT_SECONDS = 30.0
#: How long a waiting receiver keeps trying to reach a server that went away.
RECONNECT_SECONDS = 300.0
#: How long a channel may still take to open after the partner left the server.
PARTNER_GONE_GRACE_SECONDS = 5.0
#: How long a side cancelled during set-up tries to tell its partner.
ABORT_NOTICE_SECONDS = 2.0
#: After its last acknowledgement, the receiver waits this long for the sender to
#: close, so that acknowledgement is not lost with a connection torn down too early.
CLOSE_GRACE_SECONDS = 5.0


class Ui(Protocol):
    """What the user sees and answers; the CLI implements it with click and tqdm."""

    def status(self, message: str) -> None: ...
    def show_code(self, code: str) -> None: ...
    def progress(self) -> Progress: ...
    async def decide(self, offer: Offer) -> bool: ...
    async def confirm_verifier(self, verifier: str) -> bool: ...
    def kept_partial(self, name: str, held_bytes: int) -> None: ...


@dataclass(frozen=True)
class PeerOptions:
    """Options both peers share.

    :param ice_servers: STUN/TURN servers; ``None`` means those the server recommends.
    :param ice_addresses: restrict ICE host candidates to these local addresses.
    """

    server_url: str = DEFAULT_SERVER_URL
    ice_servers: tuple[IceServer, ...] | None = None
    ice_addresses: tuple[str, ...] = ()
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS


@dataclass(frozen=True)
class SendConfig:
    """:param code: the receiver's code; ``None`` prints a code here and waits for
    ``sfs receive CODE`` (the sender-first flow)."""

    code: Code | None
    paths: tuple[Path, ...]
    peer: PeerOptions = PeerOptions()
    chunk_size: int = DEFAULT_CHUNK_BYTES
    sender_name: str = ""
    verify: bool = False
    streams: int = 1
    resume: bool = True


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


async def serve(config: ServerConfig, *, ready: Callable[[str], None] | None = None) -> None:
    """Run the signaling server until cancelled."""
    await run_server(config, ready=ready)


@dataclass(frozen=True)
class Session:
    """An open, authenticated DataChannel to the peer, and the session keys."""

    channel: DataChannelLink | StripedChannel
    keys: SessionKeys


@dataclass
class _Pairing:
    """Two peers the server has introduced; the code's words are not yet proven.

    :param code: the code in use; its peer ID is the side that printed it.
    :param printed_by: which role printed it (``sfs receive``, or ``sfs send
        --print-code``): the key exchange binds both.
    """

    signal: SignalClient
    partner: str
    code: Code
    printed_by: str
    server_ice: tuple[IceServer, ...]


async def _wait_for_partner(
    stack: AsyncExitStack, options: PeerOptions, ui: Ui, *, role: str
) -> _Pairing:
    """Register, show a new code, and accept the first peer that asks for us."""
    ui.status(f"Connecting to {options.server_url}…")
    signal = await stack.enter_async_context(_signal_client(options))
    peer_id, server_ice = await signal.register()
    code = Code(peer_id, new_secret())
    ui.show_code(str(code))
    while True:
        try:
            # One peer only: the first request takes this code's single attempt.
            _, request = await signal.expect("connection_request")
            break
        except ServerLostError:
            # The server forgot every peer ID when it went away: come back with a
            # new code rather than wait for a peer that can no longer find us.
            ui.status("Lost the signaling server; reconnecting…")
            signal = await _reconnect(options, stack)
            peer_id, server_ice = await signal.register()
            code = Code(peer_id, new_secret())
            ui.status("Reconnected. The old code no longer works; use this one:")
            ui.show_code(str(code))
    partner = _field(request, "peer_id")
    await signal.call("accept_connection", {"peer_id": partner})
    return _Pairing(signal, partner, code, role, server_ice)


async def _join(
    stack: AsyncExitStack, code: Code, options: PeerOptions, ui: Ui, *, printed_by: str
) -> _Pairing:
    """Register, and ask the peer that printed ``code`` for a connection."""
    ui.status(f"Connecting to {options.server_url}…")
    signal = await stack.enter_async_context(_signal_client(options))
    _, server_ice = await signal.register()
    partner = code.peer_id
    await signal.call("find_peer", {"peer_id": partner})
    await signal.call("send_connection_request", {"peer_id": partner})
    ui.status(f"Connecting to {partner}…")
    await _expect(signal, "connection_accepted", partner, options)
    return _Pairing(signal, partner, code, printed_by, server_ice)


@asynccontextmanager
async def _cancel_tells_partner(signal: SignalClient, partner: str) -> AsyncIterator[None]:
    """A Ctrl-C during set-up reaches the partner at once, through the server (there
    is no channel yet to carry a CANCEL): it must not wait out a timeout."""
    try:
        yield
    except (KeyboardInterrupt, asyncio.CancelledError):
        try:
            async with asyncio.timeout(ABORT_NOTICE_SECONDS):
                await signal.call("abort", {"peer_id": partner, "reason": CANCELLED_REASON})
        except (SfsError, TimeoutError, asyncio.CancelledError):
            logger.debug("could not tell the partner about the cancel", exc_info=True)
        raise


async def _pair(
    stack: AsyncExitStack, code: Code | None, options: PeerOptions, ui: Ui, *, role: str
) -> _Pairing:
    """Without a code, show one and wait; with the other side's code, join it."""
    if code is None:
        return await _wait_for_partner(stack, options, ui, role=role)
    other = "receiver" if role == "sender" else "sender"
    return await _join(stack, code, options, ui, printed_by=other)


async def _agree_keys(pairing: _Pairing, role: str, options: PeerOptions) -> SessionKeys:
    """SPAKE2 on the code's words; the password and SPAKE2 state are gone afterwards."""
    exchange = KeyExchange(
        role=role,
        password=pairing.code.secret.encode(),
        code_id=pairing.code.peer_id,
        printed_by=pairing.printed_by,
    )
    try:
        return await _exchange_keys(pairing.signal, exchange, pairing.partner, options)
    finally:
        del exchange


@asynccontextmanager
async def sender_session(
    code: Code | None, options: PeerOptions, ui: Ui, *, streams: int = 1
) -> AsyncIterator[Session]:
    """Find the receiver of ``code`` (or, with no code, show one and wait for the
    receiver to come), agree on keys, and open the DataChannel(s).

    :param streams: peer connections to stripe over (the receiver may accept fewer).
    """
    addresses = check_local_addresses(options.ice_addresses)
    async with AsyncExitStack() as stack:
        pairing = await _pair(stack, code, options, ui, role="sender")
        del code
        signal, partner = pairing.signal, pairing.partner
        async with _cancel_tells_partner(signal, partner):
            keys = await _agree_keys(pairing, "sender", options)
            ice = pairing.server_ice if options.ice_servers is None else options.ice_servers
            del pairing  # holds the code's words
            links = await stack.enter_async_context(
                PeerLinks(streams, ice_servers=ice, host_addresses=addresses)
            )
            offers = await links.create_offers()
            await _send_sealed(signal, "offer", offers, keys, partner)
            # Whoever holds our sealed offer can test one guess of the words against it
            # offline; a server that plays the receiver then says nothing. Retrying the
            # same code would hand it another guess.
            sealed_answer = await _expect(signal, "answer", partner, options, after_offer=True)
            await links.accept_answers(await _open_or_abort(signal, sealed_answer, keys, partner))
            channel = await _open(links, signal, partner, options)
        yield Session(channel, keys)


@asynccontextmanager
async def receiver_session(
    options: PeerOptions, ui: Ui, *, code: Code | None = None
) -> AsyncIterator[Session]:
    """Show a code and wait for the sender (or, given the sender's ``code``, join it),
    agree on keys, and open the DataChannel."""
    addresses = check_local_addresses(options.ice_addresses)
    async with AsyncExitStack() as stack:
        pairing = await _pair(stack, code, options, ui, role="receiver")
        del code
        signal, partner = pairing.signal, pairing.partner
        async with _cancel_tells_partner(signal, partner):
            keys = await _agree_keys(pairing, "receiver", options)
            server_ice = pairing.server_ice
            del pairing  # holds the code's words
            # If the offer does not open, this code has had its one try: tell the
            # sender, end.
            sealed_offer = await _expect(signal, "offer", partner, options)
            offers = await _open_or_abort(signal, sealed_offer, keys, partner)
            ice = server_ice if options.ice_servers is None else options.ice_servers
            links = await stack.enter_async_context(
                PeerLinks(len(offers), ice_servers=ice, host_addresses=addresses)
            )
            answers = await links.answer_offers(offers)
            await _send_sealed(signal, "answer", answers, keys, partner)
            channel = await _open(links, signal, partner, options)
        yield Session(channel, keys)


async def send(config: SendConfig, ui: Ui) -> TransferResult:
    """Send files to the receiver that printed ``config.code``."""
    sources = inspect_sources(list(config.paths))  # fail before contacting anyone
    if len(sources) > MAX_FILES:
        # Found now, not after connecting: that would spend the receiver's code.
        raise SourceError(f"sfs sends at most {MAX_FILES} files at once ({len(sources)} given)")
    async with sender_session(config.code, config.peer, ui, streams=config.streams) as session:
        channel = session.channel
        proto = TransferProtocol(Role.SENDER, session.keys)
        if config.verify:
            await _verify(ui, channel, proto, session.keys)
        chunk_size = min(config.chunk_size, channel.max_message_size - FRAME_OVERHEAD_BYTES)
        if chunk_size < config.chunk_size:
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
        )
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
    async with receiver_session(config.peer, ui, code=config.code) as session:
        proto = TransferProtocol(Role.RECEIVER, session.keys)
        if config.verify:
            await _verify(ui, session.channel, proto, session.keys)
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
        )
        _log_result("received", result)
        await linger(session.channel, CLOSE_GRACE_SECONDS)
        return result


def _log_result(verb: str, result: TransferResult) -> None:
    # Precise figures for scripts/bench, which reads them at -v.
    logger.info("%s %d bytes in %.6f s", verb, result.total_bytes, result.elapsed)


async def _verify(ui: Ui, channel: Channel, proto: TransferProtocol, keys: SessionKeys) -> None:
    """Have the user compare the verification strings before any offer moves.

    Both sides ask as soon as their channel is open, so each shows its string at
    once: neither user is asked to compare with a string the other side does not show
    yet. Keepalives run meanwhile: a user who takes a while to compare must not look
    like a lost connection to the other side.
    """
    try:
        async with keepalive(channel, proto):
            confirmed = await ui.confirm_verifier(keys.verifier)
        if not confirmed:
            raise VerificationError()
    except VerificationError as exc:
        await abort_transfer(channel, proto, exc)
        raise


# -- helpers --------------------------------------------------------------------------------


async def _open(
    links: PeerLinks, signal: SignalClient, partner: str, options: PeerOptions
) -> DataChannelLink | StripedChannel:
    """Wait for the DataChannel, while listening for the partner giving up."""
    # A partner that aborts (wrong code) or disconnects while ICE runs would otherwise
    # leave us waiting for the whole connect timeout, then blaming ICE.
    watcher = asyncio.ensure_future(_watch_partner(signal, partner))
    opener = asyncio.ensure_future(links.open(options.connect_timeout))
    try:
        await asyncio.wait({watcher, opener}, return_when=asyncio.FIRST_COMPLETED)
        if not opener.done():
            watcher.result()  # raises the partner's reason
        channel = await opener
    finally:
        for task in (watcher, opener):
            task.cancel()
        await asyncio.gather(watcher, opener, return_exceptions=True)
    # From here on the peers talk directly; the server is no longer needed (and a
    # server that goes away now cannot disturb the transfer).
    await signal.leave()
    return channel


def _signal_client(options: PeerOptions) -> SignalClient:
    return SignalClient(options.server_url, connect_timeout=options.connect_timeout)


async def _reconnect(options: PeerOptions, stack: AsyncExitStack) -> SignalClient:
    """Connect again, retrying with growing pauses for up to RECONNECT_SECONDS."""
    deadline = time.monotonic() + RECONNECT_SECONDS
    pause = 0.5
    while True:
        try:
            return await stack.enter_async_context(_signal_client(options))
        except ServerUnreachableError:
            if time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 5.0)


async def _watch_partner(signal: SignalClient, partner: str) -> None:
    """Raise when the partner gives up while our side of the channel is still opening."""
    try:
        await signal.expect(partner=partner, tolerate_server_loss=True)
    except PeerGoneError:
        # The partner leaves the server as soon as its side of the channel is open,
        # which on a long link is a round trip before ours: only a channel that then
        # stays shut means the partner is really gone.
        await asyncio.sleep(PARTNER_GONE_GRACE_SECONDS)
        raise


async def _expect(
    signal: SignalClient,
    event: str,
    partner: str,
    options: PeerOptions,
    *,
    after_offer: bool = False,
) -> dict[str, Any]:
    """Wait for ``event`` from the partner, within the connect timeout.

    :param after_offer: our sealed offer is out, so this code has been spent on one
        attempt: the error then says to get a new one.
    """
    try:
        async with asyncio.timeout(options.connect_timeout):
            _, data = await signal.expect(event, partner=partner)
    except TimeoutError:
        message = f"the other side did not answer within {options.connect_timeout:.0f} s"
        if after_offer:
            message += (
                "; this code has had its one try: ask the receiver for a new code "
                "(a new `sfs receive`) instead of retrying it"
            )
        raise SignalingError(message) from None
    return data


async def _exchange_keys(
    signal: SignalClient, exchange: KeyExchange, partner: str, options: PeerOptions
) -> SessionKeys:
    await signal.call(
        "send_public_key",
        {"peer_id": partner, "key": base64.b64encode(exchange.message).decode("ascii")},
    )
    data = await _expect(signal, "receive_public_key", partner, options)
    try:
        return exchange.finish(_b64_field(data, "key"))
    except WrongCodeError:
        await _abort_wrong_code(signal, partner)
        raise


async def _send_sealed(
    signal: SignalClient,
    kind: str,
    descriptions: list[dict[str, str]],
    keys: SessionKeys,
    partner: str,
) -> None:
    """Seal the session description(s): the first as ``sdp``, any more (striping) as
    ``extra_sdps``, so a peer that knows only one stream still understands it."""
    message: dict[str, object] = {"type": kind, "sdp": descriptions[0]["sdp"]}
    if len(descriptions) > 1:
        message["extra_sdps"] = [d["sdp"] for d in descriptions[1:]]
    plaintext = json.dumps(message, separators=(",", ":")).encode("utf-8")
    sealed = seal_message(key=keys.signal_send, kind=kind, plaintext=plaintext)
    await signal.call(kind, {"peer_id": partner, "sealed": base64.b64encode(sealed).decode()})


async def _open_or_abort(
    signal: SignalClient, data: dict[str, Any], keys: SessionKeys, partner: str
) -> list[dict[str, str]]:
    """Open a sealed offer or answer; if it does not open, tell the partner and stop."""
    kind = "offer" if keys.role == "receiver" else "answer"
    try:
        return _open_sealed(data, kind, keys)
    except WrongCodeError:
        await _abort_wrong_code(signal, partner)
        raise


async def _abort_wrong_code(signal: SignalClient, partner: str) -> None:
    """Tell the partner the code did not match (best effort: we stop either way)."""
    try:
        await signal.call("abort", {"peer_id": partner, "reason": "wrong_code"})
    except SfsError:
        logger.debug("could not tell the other side about the wrong code", exc_info=True)


def _open_sealed(data: dict[str, Any], kind: str, keys: SessionKeys) -> list[dict[str, str]]:
    plaintext = open_message(key=keys.signal_receive, kind=kind, sealed=_b64_field(data, "sealed"))
    try:
        message = json.loads(plaintext)
    except ValueError as exc:
        raise SignalingError(f"the other side sent a malformed {kind}") from exc
    extra = message.get("extra_sdps", []) if isinstance(message, dict) else None
    if not isinstance(message, dict) or not isinstance(extra, list):
        raise SignalingError(f"the other side sent a malformed {kind}")
    sdps = [message.get("sdp"), *extra]
    if (
        message.get("type") != kind
        or not all(isinstance(sdp, str) for sdp in sdps)
        or len(sdps) > MAX_STREAMS
    ):
        raise SignalingError(f"the other side sent a malformed {kind}")
    return [{"type": kind, "sdp": sdp} for sdp in sdps]


def _field(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise SignalingError(f"the signaling server sent a message without {key}")
    return value


def _b64_field(data: dict[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(_field(data, key), validate=True)
    except (binascii.Error, ValueError):
        raise SignalingError(f"the signaling server sent a malformed {key}") from None
