"""Opening the transport of a transfer: the chosen direct TCP connection (to the peer,
or through the relay of ``sfs serve``), or the DataChannel(s), as the sender chose and
said with CHOSEN (:mod:`sfs.peer.transport.tcp`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sfs.defaults import Transport
from sfs.errors import (
    PeerConnectionError,
    RemoteProtocolError,
)
from sfs.peer.transport.channel import Channel
from sfs.peer.transport.quic import QUIC_SECONDS
from sfs.peer.transport.striping import StripedChannel
from sfs.peer.transport.tcp import CHOSEN, DirectPath, TcpLink

logger = logging.getLogger(__name__)

#: In ``auto``, how long the sender waits for a proven TCP connection once it has
#: the answer before it takes the DataChannel (a LAN answers in milliseconds).
DIRECT_SECONDS = 2.0


@dataclass(frozen=True)
class Opened:
    """The transport a session's transfer runs on."""

    channel: Channel
    #: The chosen TCP connection, when the channel is one (its closing is the
    #: caller's); None for the DataChannel(s).
    tcp: TcpLink | None = None
    #: The channel is the QUIC stream on the WebRTC path (sfs.peer.transport.quic):
    #: its frames are the TCP path's, and the peer connection carries it.
    quic: bool = False


#: (Sender) QUIC on the WebRTC path: its proven links, one per peer connection.
#: (Receiver) the QUIC links the sender chose.
QuicOpener = Callable[[], Awaitable[list[TcpLink]]]


async def open_transport(
    *,
    sender: bool,
    transport: Transport,
    direct: DirectPath | None,
    datachannel: Callable[[], Awaitable[Channel]] | None,
    connect_timeout: float,
    quic: QuicOpener | None = None,
) -> Opened:
    """Open the transport of the transfer: the chosen TCP connection, or the DataChannel.

    ``direct`` is None when either side left TCP out of its description (an older
    sfs, the browser page, ``--transport datachannel``): then the DataChannel is used
    as always, with no CHOSEN message.  Otherwise the sender chooses (TCP within
    DIRECT_SECONDS in ``auto``, else the DataChannel) and says so on the chosen one;
    the receiver takes whichever the sender chose.  A relay the path joined (after
    its head start) is one more TCP connection: once DIRECT_SECONDS passed with no
    DataChannel open, the first of the two wins.  ``datachannel`` is None for
    ``--relay only``: the relay is then the one way.

    ``quic`` (both sides offered QUIC) makes the WebRTC path carry QUIC when it comes
    up: the sender tries it once the DataChannel is open and says CHOSEN on whichever
    it takes (also when there is no direct path); the receiver takes either.
    """
    if datachannel is None:
        assert direct is not None
        try:
            return await _relay_only(sender, direct, connect_timeout)
        finally:
            await direct.close()
    if direct is None:
        if transport is Transport.TCP:
            raise PeerConnectionError(
                "the other side does not take direct TCP connections (an older sfs, a "
                "browser, or --transport datachannel); try --transport auto"
            )
        if quic is None:
            return Opened(await datachannel())
        if sender:
            by_quic = asyncio.ensure_future(quic())
            by_datachannel = asyncio.ensure_future(datachannel())
            try:
                return await _over_webrtc(by_datachannel, by_quic)
            finally:
                await _cancelled(by_datachannel, by_quic)
        return await _receiver_opens(transport, None, datachannel, connect_timeout, quic)
    try:
        if sender:
            return await _sender_opens(transport, direct, datachannel, connect_timeout, quic)
        return await _receiver_opens(transport, direct, datachannel, connect_timeout, quic)
    finally:
        await direct.close()


async def _over_webrtc(
    by_datachannel: asyncio.Future[Channel], by_quic: asyncio.Future[list[TcpLink]] | None
) -> Opened:
    """(Sender) the WebRTC path is the one: QUIC on it if it is proven before the
    DataChannel opens or within QUIC_SECONDS after, else the DataChannel; CHOSEN said
    on the one taken."""
    if by_quic is not None:
        await _first(by_quic, by_datachannel)
        webrtc_failed = by_datachannel.done() and by_datachannel.exception() is not None
        if not by_quic.done() and not webrtc_failed:
            await asyncio.wait({by_quic}, timeout=QUIC_SECONDS)
        if by_quic.done() and not by_quic.cancelled() and by_quic.exception() is None:
            links = by_quic.result()
            for link in links:
                link.choose()
            channel = _striped(links)
            logger.info("QUIC on %d peer connection(s)", len(links))
            logger.info("connected at %.6f: %s", time.time(), channel.route)
            return Opened(channel, quic=True)
        why = (
            by_quic.exception()
            if by_quic.done() and not by_quic.cancelled()
            else f"not within {QUIC_SECONDS:.0f} s"
        )
        logger.info("QUIC did not come up (%s): using the DataChannel", why)
        by_quic.cancel()
    channel = await by_datachannel
    channel.send(CHOSEN)
    return Opened(channel)


def _striped(links: list[TcpLink]) -> Channel:
    """QUIC on one peer connection, or striped over several (each its own connection
    with its own congestion window: what a lossy long link needs)."""
    return links[0] if len(links) == 1 else StripedChannel(links)


async def _cancelled(*futures: asyncio.Future[Any] | None) -> None:
    """Cancel what is still running and wait for it (its outcome is no news)."""
    running = [f for f in futures if f is not None]
    for future in running:
        if not future.done():
            future.cancel()
    await asyncio.gather(*running, return_exceptions=True)


async def _sender_opens(
    transport: Transport,
    direct: DirectPath,
    datachannel: Callable[[], Awaitable[Channel]],
    connect_timeout: float,
    quic: QuicOpener | None,
) -> Opened:
    if transport is Transport.TCP:
        try:
            async with asyncio.timeout(connect_timeout):
                return _tcp_chosen(await direct.choose())
        except TimeoutError:
            raise PeerConnectionError(
                f"no direct TCP connection within {connect_timeout:.0f} s (--transport tcp); "
                "try --transport auto"
            ) from None
    by_tcp = asyncio.ensure_future(direct.choose()) if transport is Transport.AUTO else None
    by_datachannel = asyncio.ensure_future(datachannel())
    # QUIC starts as soon as ICE has its pair, beside the DataChannel's set-up.
    by_quic = asyncio.ensure_future(quic()) if quic is not None else None
    try:
        if by_tcp is not None:
            # TCP, if a connection is proven within DIRECT_SECONDS; but once the
            # DataChannel is open, only while a TCP connection is still being proven
            # (across NATs the dials go nowhere: no reason to wait then).
            deadline = asyncio.get_running_loop().time() + DIRECT_SECONDS
            pending: set[asyncio.Future[TcpLink] | asyncio.Future[Channel]] = {
                by_tcp,
                by_datachannel,
            }
            while pending:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                done, pending = await asyncio.wait(
                    pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if by_tcp in done:
                    return _tcp_chosen(by_tcp.result())
                if by_datachannel in done and not direct.connected_count:
                    break
            # No DataChannel yet: the relay, if it proves first, else WebRTC.
            if (
                direct.relay_pending
                and not by_datachannel.done()
                and (link := await _relay_or_datachannel(direct, by_tcp, by_datachannel))
            ):
                return _tcp_chosen(link)
            logger.info("no direct TCP connection: using WebRTC")
            by_tcp.cancel()
        await direct.close()
        return await _over_webrtc(by_datachannel, by_quic)
    finally:
        await _cancelled(by_tcp, by_datachannel, by_quic)


async def _relay_or_datachannel(
    direct: DirectPath, by_tcp: asyncio.Future[TcpLink], by_datachannel: asyncio.Future[Channel]
) -> TcpLink | None:
    """(Sender) the relayed connection if it is proven before the DataChannel opens,
    or after the DataChannel failed (ICE found no path: the relay is what is left,
    until it too gives up); None to take the DataChannel (or its error)."""
    await _first(by_tcp, by_datachannel)
    if not by_tcp.done() and by_datachannel.exception() is not None:
        logger.info("WebRTC failed (%s): waiting for the relay", by_datachannel.exception())
        await _unless_relay_fails(direct, by_tcp)
    if by_tcp.done() and not by_tcp.cancelled() and by_tcp.exception() is None:
        return by_tcp.result()
    return None


async def _first(*futures: asyncio.Future[Any]) -> None:
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)


async def _unless_relay_fails(direct: DirectPath, future: asyncio.Future[TcpLink]) -> None:
    """Wait for ``future``, or until the relay gives up."""
    relay_failed = asyncio.ensure_future(direct.relay_failed())
    try:
        await _first(future, relay_failed)
    finally:
        relay_failed.cancel()


async def _relay_only(sender: bool, direct: DirectPath, connect_timeout: float) -> Opened:
    """``--relay only``: the relayed connection or nothing, with the relay's reason."""
    try:
        async with asyncio.timeout(connect_timeout):
            if sender:
                return _tcp_chosen(await direct.choose())
            link = await direct.chosen()
            logger.info("the sender chose the connection through the relay")
            return _tcp_taken(link)
    except TimeoutError:
        raise PeerConnectionError(
            f"no connection through the relay within {connect_timeout:.0f} s (--relay only)"
        ) from None


def _tcp_chosen(link: TcpLink) -> Opened:
    # The time, precisely, is for scripts/bench (connect time), which reads it at -v.
    logger.info("%s connection to %s chosen", link.route, link.peer)
    logger.info("connected at %.6f: %s", time.time(), link.route)
    return _tcp_taken(link)


def _tcp_taken(link: TcpLink) -> Opened:
    return Opened(link, tcp=link)


async def _receiver_opens(
    transport: Transport,
    direct: DirectPath | None,
    datachannel: Callable[[], Awaitable[Channel]],
    connect_timeout: float,
    quic: QuicOpener | None,
) -> Opened:
    async def over_datachannel() -> Channel:
        channel = await datachannel()
        first = await channel.receive()
        if bytes(first) != CHOSEN:
            raise RemoteProtocolError("the other side sent a frame before choosing a transport")
        return channel

    loop = asyncio.get_running_loop()
    by_tcp = asyncio.ensure_future(direct.chosen()) if direct is not None else loop.create_future()
    by_quic = asyncio.ensure_future(quic()) if quic is not None else loop.create_future()
    by_datachannel = asyncio.ensure_future(over_datachannel())
    futures = (by_tcp, by_quic, by_datachannel)
    try:
        # The DataChannel has its own bound (connect_timeout, then ICE's reason, with
        # its hint); this one is for a sender that never says anything at all.
        async with asyncio.timeout(connect_timeout + DIRECT_SECONDS + 1):
            _, pending = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
            if by_quic.done() and by_quic.exception() is None:
                logger.info("the sender chose QUIC on the WebRTC path")
                return Opened(_striped(by_quic.result()), quic=True)
            if not by_tcp.done() and not by_datachannel.done():
                # QUIC did not come up here: the sender chooses another, and says so.
                pending.discard(by_quic)
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if by_tcp.done():
                logger.info("the sender chose the direct TCP connection")
                return _tcp_taken(by_tcp.result())
            if by_datachannel.exception() is None:
                if transport is Transport.TCP:
                    raise PeerConnectionError(
                        "the sender could not connect here over TCP (--transport tcp); "
                        "try --transport auto"
                    )
                return Opened(by_datachannel.result())
            # No DataChannel (ICE failed): TCP can still win if a connection is
            # proven (the sender chooses within its own bound) or the relay may yet
            # give one; else this is over, and ICE's reason (with its hint) is the one
            # to give.
            if direct is not None and direct.relay_pending:
                logger.info("WebRTC failed: waiting for the sender's choice through the relay")
                await _unless_relay_fails(direct, by_tcp)
                if by_tcp.done():
                    return _tcp_taken(by_tcp.result())
            if direct is not None and direct.proven_count:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DIRECT_SECONDS):
                        return _tcp_taken(await by_tcp)
            return Opened(by_datachannel.result())
    except TimeoutError:
        raise PeerConnectionError(
            f"the sender chose no connection within {connect_timeout:.0f} s"
        ) from None
    finally:
        for future in futures:
            future.cancel()
        await asyncio.gather(*futures, return_exceptions=True)
