"""Meeting the other side: through a server or on the LAN, by a code or as a paired
device, up to an open, authenticated session (:class:`sfs.setup.Session`).

:func:`meet` is the one way in: the side that shows a code registers and waits (on
the LAN it runs the signaling server itself and advertises it on mDNS), the side
that was given one finds it (on the LAN, by probing the waiting sides' records), and
:func:`sfs.setup.set_up` pumps the handshake between them.  A receiver showing a code
also waits at each paired device's rendezvous (:mod:`sfs.pairs`); `sfs send @NAME`
is :func:`paired_sender_session`; after an outage :func:`connect_again` finds the
other side the same ways (:mod:`sfs.reconnect`); `sfs send --many` keeps one server
connection open for all its receivers (:func:`open_lobby`, :mod:`sfs.many`).
:func:`preload_transports` imports aiortc and qh3 in a thread meanwhile.  What a
session then carries is :mod:`sfs.app`'s.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from sfs.code import Code
from sfs.defaults import Transport
from sfs.errors import (
    CodeNotFoundError,
    PeerConnectionError,
    SfsError,
    SignalingError,
    WrongCodeError,
)
from sfs.lan.record import Advert, signaling_url
from sfs.pairs import Pair
from sfs.peer.proto.crypto import PAIR_PERIOD_SECONDS, pair_code, pair_period
from sfs.peer.proto.framing import Role
from sfs.peer.proto.handshake import Handshake
from sfs.peer.transport.addresses import check_local_addresses
from sfs.peer.transport.quic import load_qh3, quic_available
from sfs.reconnect import Connect, Quiet
from sfs.setup import PeerOptions, Session, Ui, set_up
from sfs.signal.client import Registration, SignalClient, serves_page

logger = logging.getLogger(__name__)


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
    async with meet(Role.SENDER, code, options, ui, streams=streams, link=link) as session:
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
    async with meet(Role.RECEIVER, code, options, ui, link=link, pairs=pairs) as session:
        yield session


@asynccontextmanager
async def meet(
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
    """Meet the other side by ``code`` (or, with none, show one and wait for it), set
    up, and yield the open session; it closes when the block ends.

    Through ``options.server_url``, or with none on the LAN: the side that shows the
    code runs the signaling server itself, the other finds it on mDNS.

    :param link: show the code (if this side shows one) with a link to the web
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
            say_proxy(ui, options)
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


async def open_lobby(
    stack: AsyncExitStack, options: PeerOptions, ui: Ui, *, many: int, link: bool
) -> tuple[SignalClient, Registration, str, str | None]:
    """`sfs send --many`: the one server connection, registered for ``many``, that
    every receiver asks: (it, its registration, the server's URL, the page's URL to
    link the code to).  In LAN mode the server is this side's embedded one, advertised
    on mDNS as a waiting sender's, until the last receiver is served."""
    url, page = options.server_url, None
    if url is not None:
        ui.status(f"Connecting via {url}…")
        say_proxy(ui, options)
        if link and await serves_page(url, ca_file=options.ca_file, proxy=options.proxy):
            page = url
        lobby = await stack.enter_async_context(
            SignalClient(
                url,
                connect_timeout=options.connect_timeout,
                ca_file=options.ca_file,
                proxy=options.proxy,
            )
        )
        return lobby, await lobby.register(many=many), url, page
    from sfs.lan.discovery import advertise, default_route_address, find_lan, open_zeroconf
    from sfs.lan.embedded import EMBEDDED_CONFIG, EMBEDDED_PAGE_CONFIG, embedded_server
    from sfs.lan.record import page_urls

    lan = find_lan()
    embedded = await stack.enter_async_context(
        embedded_server(Role.SENDER.value, EMBEDDED_PAGE_CONFIG if link else EMBEDDED_CONFIG)
    )
    if link:
        urls = page_urls(lan.addresses, embedded.port, default_route_address())
        page = urls[0] if urls else None
    zeroconf = open_zeroconf(lan)
    stack.push_async_callback(zeroconf.async_close)
    ui.status("On the local network (no server; for other networks use --server)")
    lobby = await stack.enter_async_context(
        SignalClient(embedded.local_url, connect_timeout=options.connect_timeout)
    )
    registration = await lobby.register(many=many)
    embedded.holding.peer_id = registration.peer_id  # what probes now prove
    advert = Advert(Role.SENDER.value, options.name, embedded.port, lan.addresses, int(time.time()))
    await stack.enter_async_context(advertise(zeroconf, advert))
    return lobby, registration, embedded.local_url, page


def say_proxy(ui: Ui, options: PeerOptions) -> None:
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


def connect_again(role: Role, options: PeerOptions) -> Connect:
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


#: After a paired device's attempt at its rendezvous failed (someone else there, the
#: server lost), the wait there begins again after this long.
PAIR_RETRY_SECONDS = 1.0


#: Between a sender's rounds of lookups for a paired device not (yet) waiting.
PAIR_LOOKUP_PAUSE_SECONDS = 2.0


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
