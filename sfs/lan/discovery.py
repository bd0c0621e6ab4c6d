"""mDNS with zeroconf: advertise a waiting peer, and browse for waiting peers.

The record format and what to make of records are :mod:`sfs.lan.record`'s; this
module only moves them.  Every interface that is up and can multicast, IPv4 and
IPv6; never loopback.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from sfs.errors import NoLanError, PeerNotOnLanError
from sfs.lan.record import (
    MAX_PAIR_PROBE_BODY_BYTES,
    MAX_PROBE_BODY_BYTES,
    MAX_RECORDS,
    PAIR_PROBE_PATH,
    PROBE_PATH,
    SERVICE_TYPE,
    Advert,
    Probed,
    choose,
    connectable,
    instance_name,
    parse,
    signaling_url,
)
from sfs.peer.proto.crypto import (
    PAIR_PROBE_NONCE_BYTES,
    PAIR_PROBE_SLOTS,
    IdProbe,
    pair_period,
    pair_probe_period,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Linux interface flags (``/sys/class/net/NAME/flags``).
IFF_UP = 0x1
IFF_MULTICAST = 0x1000
#: How long resolving one record (SRV, TXT, addresses) may take.
RESOLVE_MILLISECONDS = 3000
#: How long the goodbye packets may take on the way out.
GOODBYE_SECONDS = 1.0
#: How long asking an advertised endpoint whether it holds the ID may take (on a
#: LAN, an address that does not answer by then is not the way there).
PROBE_SECONDS = 3.0
#: Once an endpoint has proven the ID, how long the other probes still under way
#: may take to show a second device claiming it.
SETTLE_SECONDS = 0.5


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


def default_route_address() -> str | None:
    """This machine's source address towards the default route (IPv4, else IPv6), or
    None without one. A connected UDP socket only asks the kernel for a route: no
    packet leaves, and the documentation addresses below are never reached."""
    for family, nowhere in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((nowhere, 9))
                return str(probe.getsockname()[0])
        except OSError:
            continue
    return None


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
        instance_name(token=token),
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
    logger.debug("advertising a %s on %s port %d", advert.role, advert.addresses, advert.port)
    try:
        yield
    finally:
        announced.cancel()
        try:
            async with asyncio.timeout(GOODBYE_SECONDS):
                await (await zc.async_unregister_service(info))
        except (TimeoutError, OSError):
            logger.debug("the goodbye for our record was not sent in time")


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


async def probe(
    advert: Advert, *, peer_id: str, waiting_role: str, within: float = PROBE_SECONDS
) -> Probed:
    """Ask every address of ``advert`` at once whether it holds ``peer_id`` (a record
    may list addresses of networks this machine is not on); the first that proves it
    wins.  Never more than ``within`` seconds: a record whose port accepts and then
    says nothing costs no more than that, and all records are asked at once."""

    async def ask(session: aiohttp.ClientSession, address: str) -> Probed:
        question = IdProbe(peer_id=peer_id, waiting_role=waiting_role)
        url = signaling_url(address, advert.port) + PROBE_PATH
        body = {"msg": base64.b64encode(question.message).decode("ascii")}
        try:
            async with session.post(url, json=body, allow_redirects=False) as response:
                if response.status == 503:
                    return Probed(advert, host=address, busy=True)
                if response.status != 200:
                    return Probed(advert)
                answer = json.loads(await response.content.read(MAX_PROBE_BODY_BYTES))
                message, instance, proof = (
                    base64.b64decode(answer[key], validate=True)
                    for key in ("msg", "instance", "proof")
                )
        except aiohttp.ClientConnectorError:  # nobody there
            return Probed(advert)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError):
            # Connected, then closed before an answer: turned away at the door.
            return Probed(advert, host=address, busy=True)
        except (aiohttp.ClientError, OSError, ValueError, KeyError, TypeError, binascii.Error):
            return Probed(advert)
        if not question.holds(message=message, instance=instance, proof=proof):
            return Probed(advert)
        return Probed(advert, host=address, instance=instance)

    results = await _each_address(advert, ask, lambda r: r.instance is not None, within)
    proven = next((r for r in results if r.instance is not None), None)
    busy = next((r for r in results if r.busy), None)
    return proven or busy or Probed(advert)


async def _each_address(
    advert: Advert,
    ask: Callable[[aiohttp.ClientSession, str], Awaitable[T]],
    proven: Callable[[T], bool],
    within: float,
) -> list[T]:
    """``ask`` every address of ``advert`` at once, for ``within`` seconds at most;
    the answers until the first ``proven`` one (that one last)."""
    timeout = aiohttp.ClientTimeout(total=within)
    results: list[T] = []
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = [asyncio.ensure_future(ask(session, a)) for a in advert.addresses]
        try:
            async with asyncio.timeout(within):
                for next_done in asyncio.as_completed(tasks):
                    results.append(await next_done)
                    if proven(results[-1]):
                        break
        except TimeoutError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return results


async def find_holder(
    browser: Browser, *, peer_id: str, waiting_role: str, within: float
) -> Probed:
    """Probe every record of a waiting ``waiting_role`` as it comes, all at once, and
    return the endpoint that holds ``peer_id``: see :func:`sfs.lan.record.choose`.

    Once one has proven it, the probes still under way get SETTLE_SECONDS to finish,
    so that a second device claiming the ID is noticed.  Ends within ``within``."""

    def ask(advert: Advert, seconds: float) -> Awaitable[Probed]:
        return probe(advert, peer_id=peer_id, waiting_role=waiting_role, within=seconds)

    done = await _each_record(
        browser, waiting_role, ask, lambda r: r.instance is not None, within, SETTLE_SECONDS
    )
    return choose(done, peer_id=peer_id, role=waiting_role)


async def _each_record(
    browser: Browser,
    role: str,
    ask: Callable[[Advert, float], Awaitable[T]],
    proven: Callable[[T], bool],
    within: float,
    settle: float,
) -> list[T]:
    """``ask`` every record of a waiting ``role`` as it comes (at most MAX_RECORDS),
    all at once, for ``within`` seconds at most, each for at most PROBE_SECONDS; once
    one answer is ``proven``, the others still under way get ``settle`` seconds.
    Returns every answer that came."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    asked: set[tuple[str, Advert]] = set()
    running: set[asyncio.Future[T]] = set()
    done: list[T] = []
    changed: asyncio.Future[bool] | None = None
    found_at: float | None = None
    try:
        while True:
            for name, advert in browser.adverts.items():
                if advert.role != role or (name, advert) in asked:
                    continue
                if len(asked) >= MAX_RECORDS:
                    break
                asked.add((name, advert))
                seconds = min(PROBE_SECONDS, max(0.1, deadline - loop.time()))
                running.add(asyncio.ensure_future(ask(advert, seconds)))
            if found_at is not None:
                deadline = min(deadline, found_at + settle)
                if not running:
                    break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if changed is None or changed.done():
                changed = asyncio.ensure_future(browser.wait_changed(remaining))
            waiters: set[asyncio.Future[Any]] = {changed, *running}
            await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            for task in [t for t in running if t.done()]:
                running.discard(task)
                result = task.result()
                if proven(result) and found_at is None:
                    found_at = loop.time()
                done.append(result)
    finally:
        leftovers: list[asyncio.Future[Any]] = [*running]
        if changed is not None:
            leftovers.append(changed)
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
    return done


# -- paired devices ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PairHolder:
    """A waiting receiver that proved it holds the pair: where, and for which period
    (of its clock) it waits at the pair's rendezvous."""

    host: str
    port: int
    period: int


async def pair_probe(
    advert: Advert, secret: bytes, *, within: float = PROBE_SECONDS
) -> PairHolder | None:
    """Ask every address of ``advert`` at once whether it is the pair's other device."""

    async def ask(session: aiohttp.ClientSession, address: str) -> PairHolder | None:
        asked = secrets.token_bytes(PAIR_PROBE_NONCE_BYTES)
        url = signaling_url(address, advert.port) + PAIR_PROBE_PATH
        body = {"nonce": base64.b64encode(asked).decode("ascii")}
        try:
            async with session.post(url, json=body, allow_redirects=False) as response:
                if response.status != 200:
                    return None
                answer = json.loads(await response.content.read(MAX_PAIR_PROBE_BODY_BYTES))
                answered = base64.b64decode(answer["nonce"], validate=True)
                tags = [base64.b64decode(t, validate=True) for t in answer["tags"]]
        except (aiohttp.ClientError, OSError, ValueError, KeyError, TypeError, binascii.Error):
            return None
        if len(tags) > PAIR_PROBE_SLOTS:
            return None
        period = pair_probe_period(secret, asked, answered, tags, around=pair_period(time.time()))
        return None if period is None else PairHolder(address, advert.port, period)

    results = await _each_address(advert, ask, lambda r: r is not None, within)
    return next((r for r in results if r is not None), None)


async def find_pair_holder(
    browser: Browser, *, secret: bytes, name: str, within: float
) -> PairHolder:
    """Pair-probe every waiting receiver's record as it comes, all at once, and return
    the first that proves it is ``name``, the pair's other device."""

    def ask(advert: Advert, seconds: float) -> Awaitable[PairHolder | None]:
        return pair_probe(advert, secret, within=seconds)

    done = await _each_record(browser, "receiver", ask, lambda r: r is not None, within, 0.0)
    found = next((r for r in done if r is not None), None)
    if found is None:
        raise PeerNotOnLanError(
            f"{name} is not waiting on this network: run `sfs receive` on it (for other "
            "networks use --server on both)"
        )
    return found
