"""mDNS with zeroconf: advertise a waiting peer, and browse for waiting peers.

The record format and what to make of records are :mod:`sfs.lan.record`'s; this
module only moves them.  Every interface that is up and can multicast, IPv4 and
IPv6; never loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from sfs.errors import NoLanError
from sfs.lan.record import (
    MAX_RECORDS,
    SERVICE_TYPE,
    Advert,
    connectable,
    instance_name,
    parse,
)

logger = logging.getLogger(__name__)

#: Linux interface flags (``/sys/class/net/NAME/flags``).
IFF_UP = 0x1
IFF_MULTICAST = 0x1000
#: How long resolving one record (SRV, TXT, addresses) may take.
RESOLVE_MILLISECONDS = 3000
#: How long the goodbye packets may take on the way out.
GOODBYE_SECONDS = 1.0
#: How long a TCP connection to an advertised address may take (on a LAN, an
#: address that does not answer by then is not the way there).
PROBE_SECONDS = 3.0


def _multicast_capable(name: str) -> bool:
    try:
        flags = int(Path(f"/sys/class/net/{name}/flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return True  # not Linux: an interface with an address is taken as usable
    return bool(flags & IFF_UP) and bool(flags & IFF_MULTICAST)


@dataclass(frozen=True)
class Lan:
    """This machine on the local network.

    :param addresses: what another machine could reach (for the record): no
        loopback, no IPv6 link-local
    :param interfaces: what zeroconf listens and sends on: the IPv4 addresses and
        IPv6 interface indexes of the interfaces that are up and can multicast
        (not loopback: multicast on it reaches nobody, and IPv6 there fails)
    """

    addresses: tuple[str, ...]
    interfaces: tuple[str | int, ...]


def find_lan() -> Lan:
    """:class:`Lan`, or :class:`NoLanError` when no interface can take part."""
    found: list[str] = []
    interfaces: list[str | int] = []
    for adapter in ifaddr.get_adapters():
        if not _multicast_capable(adapter.name):
            continue
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                if not ipaddress.ip_address(ip.ip).is_loopback:
                    found.append(ip.ip)
                    interfaces.append(ip.ip)
            elif not ipaddress.ip_address(ip.ip[0]).is_loopback and adapter.index is not None:
                found.append(ip.ip[0])
                interfaces.append(adapter.index)
    addresses = connectable(found)
    if not addresses:
        raise NoLanError()
    return Lan(addresses, tuple(dict.fromkeys(interfaces)))


def open_zeroconf(lan: Lan) -> AsyncZeroconf:
    try:
        return AsyncZeroconf(interfaces=list(lan.interfaces), ip_version=IPVersion.All)
    except (OSError, RuntimeError) as exc:
        raise NoLanError(
            f"cannot use multicast DNS here ({exc}); use --server URL (a `sfs serve`) instead"
        ) from exc


@contextlib.asynccontextmanager
async def advertise(zc: AsyncZeroconf, advert: Advert) -> AsyncIterator[None]:
    """Advertise ``advert`` until the block ends, then say goodbye (so browsers drop
    it at once instead of when its TTL runs out)."""
    token = secrets.token_hex(3)
    info = AsyncServiceInfo(
        SERVICE_TYPE,
        instance_name(advert.peer_id, token=token),
        port=advert.port,
        properties=advert.properties(),
        parsed_addresses=list(advert.addresses),
        server=f"sfs-{token}.local.",
    )
    # No probing (cooperating_responders): it would hold the code back for about a
    # second, and the random suffix already makes the name unique; a rogue that
    # wants to clash can, probing or not (see sfs.lan.record).
    # The announcements go on in the background: stopped before the goodbye, so none
    # can follow it and bring the record back.
    announced = asyncio.ensure_future(
        await zc.async_register_service(info, cooperating_responders=True)
    )
    logger.debug("advertising %s on %s port %d", advert.peer_id, advert.addresses, advert.port)
    try:
        yield
    finally:
        announced.cancel()
        try:
            async with asyncio.timeout(GOODBYE_SECONDS):
                await (await zc.async_unregister_service(info))
        except (TimeoutError, OSError):
            logger.debug("the goodbye for %s was not sent in time", advert.peer_id)


class Browser:
    """The waiting sfs peers mDNS reports, kept up to date while the block runs.

    Resolution of each record runs in the background; :meth:`wait_changed` wakes
    up when the set of records changes.
    """

    def __init__(self, zc: AsyncZeroconf) -> None:
        self._zc = zc
        self._found: dict[str, Advert] = {}
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()
        self._browser: AsyncServiceBrowser | None = None

    async def __aenter__(self) -> Browser:
        self._browser = AsyncServiceBrowser(
            self._zc.zeroconf, [SERVICE_TYPE], handlers=[self._on_change]
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._browser is not None:
            await self._browser.async_cancel()
        tasks = list(self._resolving.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def adverts(self) -> dict[str, Advert]:
        """Instance name -> advert, of the records resolved and not yet gone."""
        return dict(self._found)

    async def wait_changed(self, seconds: float) -> bool:
        """Wait until a record comes, changes or goes, for at most ``seconds``."""
        try:
            async with asyncio.timeout(max(seconds, 0.0)):
                await self._changed.wait()
        except TimeoutError:
            return False
        self._changed.clear()
        return True

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            task = self._resolving.pop(name, None)
            if task is not None:
                task.cancel()
            if self._found.pop(name, None) is not None:
                self._changed.set()
            return
        if name in self._resolving:
            return
        if len(self._found) + len(self._resolving) >= MAX_RECORDS and name not in self._found:
            return  # a flood: what is tracked already is what there is
        self._resolving[name] = asyncio.create_task(self._resolve(name))

    async def _resolve(self, name: str) -> None:
        try:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if not await info.async_request(self._zc.zeroconf, RESOLVE_MILLISECONDS):
                return
            advert = parse(info.properties, port=info.port, addresses=info.parsed_addresses())
            if advert is None:
                logger.debug("ignoring an unusable record %r", name)
                self._found.pop(name, None)
            else:
                self._found[name] = advert
            self._changed.set()
        finally:
            self._resolving.pop(name, None)


async def first_reachable(
    addresses: tuple[str, ...], port: int, *, within: float = PROBE_SECONDS
) -> str | None:
    """The first of ``addresses`` that accepts a TCP connection on ``port``, all tried
    at once (a record may list addresses of networks this machine is not on)."""

    async def probe(address: str) -> str:
        _, writer = await asyncio.open_connection(address, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return address

    tasks = [asyncio.ensure_future(probe(address)) for address in addresses]
    try:
        async with asyncio.timeout(within):
            for next_done in asyncio.as_completed(tasks):
                try:
                    return await next_done
                except OSError:
                    continue
    except TimeoutError:
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return None
