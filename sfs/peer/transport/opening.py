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


async def open_transport(
    *,
    sender: bool,
    transport: Transport,
    direct: DirectPath | None,
    datachannel: Callable[[], Awaitable[Channel]] | None,
    connect_timeout: float,
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
        return Opened(await datachannel())
    try:
        if sender:
            return await _sender_opens(transport, direct, datachannel, connect_timeout)
        return await _receiver_opens(transport, direct, datachannel, connect_timeout)
    finally:
        await direct.close()


async def _sender_opens(
    transport: Transport,
    direct: DirectPath,
    datachannel: Callable[[], Awaitable[Channel]],
    connect_timeout: float,
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
        channel = await by_datachannel
        channel.send(CHOSEN)
        return Opened(channel)
    finally:
        for future in (by_tcp, by_datachannel):
            if future is not None and not future.done():
                future.cancel()
        await asyncio.gather(
            *(f for f in (by_tcp, by_datachannel) if f is not None), return_exceptions=True
        )


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
    direct: DirectPath,
    datachannel: Callable[[], Awaitable[Channel]],
    connect_timeout: float,
) -> Opened:
    async def over_datachannel() -> Channel:
        channel = await datachannel()
        first = await channel.receive()
        if bytes(first) != CHOSEN:
            raise RemoteProtocolError("the other side sent a frame before choosing a transport")
        return channel

    by_tcp = asyncio.ensure_future(direct.chosen())
    by_datachannel = asyncio.ensure_future(over_datachannel())
    try:
        # The DataChannel has its own bound (connect_timeout, then ICE's reason, with
        # its hint); this one is for a sender that never says anything at all.
        async with asyncio.timeout(connect_timeout + DIRECT_SECONDS + 1):
            await asyncio.wait({by_tcp, by_datachannel}, return_when=asyncio.FIRST_COMPLETED)
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
            if direct.relay_pending:
                logger.info("WebRTC failed: waiting for the sender's choice through the relay")
                await _unless_relay_fails(direct, by_tcp)
                if by_tcp.done():
                    return _tcp_taken(by_tcp.result())
            if direct.proven_count:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DIRECT_SECONDS):
                        return _tcp_taken(await by_tcp)
            return Opened(by_datachannel.result())
    except TimeoutError:
        raise PeerConnectionError(
            f"the sender chose no connection within {connect_timeout:.0f} s"
        ) from None
    finally:
        for future in (by_tcp, by_datachannel):
            future.cancel()
        await asyncio.gather(by_tcp, by_datachannel, return_exceptions=True)
