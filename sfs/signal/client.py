"""The signaling client: an async context manager over ``socketio.AsyncClient``.

Requests use Socket.IO acknowledgements, so each call returns the server's answer or
raises the matching :mod:`sfs.errors` class.  Pushed events land in one queue that
:meth:`SignalClient.next_event` reads in order; what they mean for the set-up (whose
they are, which are early, a partner gone) is :mod:`sfs.peer.proto.handshake`'s business.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import socketio
import yarl

from sfs.errors import (
    CodeNotFoundError,
    CodeUsedUpError,
    PeerGoneError,
    RoomFullError,
    ServerLostError,
    ServerUnreachableError,
    SfsError,
    SignalingError,
    WrongCodeError,
)
from sfs.signal.messages import IceServer
from sfs.socks import Socks, proxy_errors
from sfs.text import printable

logger = logging.getLogger(__name__)

#: How long reaching the signaling server may take when the caller names no time; the
#: other side's steps have their own (sfs.defaults.PEER_CONNECT_TIMEOUT_SECONDS).
SIGNAL_CONNECT_TIMEOUT_SECONDS = 10.0
CALL_TIMEOUT_SECONDS = 10.0
#: Server -> client events this client listens for.
PUSHED_EVENTS = (
    "peer_found",
    "connection_request",
    "connection_accepted",
    "receive_public_key",
    "offer",
    "answer",
    "ice_candidate",
    "peer_aborted",
    "peer_disconnected",
)
_DISCONNECTED = "__disconnected__"
#: What next_event() returns once the connection to the server dropped.
SERVER_LOST = "server_lost"


@dataclass(frozen=True)
class Registration:
    """What ``sfs serve`` answers a registration with."""

    #: This peer's ID.
    peer_id: str
    #: The STUN/TURN servers it recommends.
    ice_servers: tuple[IceServer, ...]
    #: Its relay: "" its own ``/relay``, else an absolute URL; None when it has none.
    relay: str | None = None
    #: A session that loses its connection may meet again here (``rendezvous``).
    come_back: bool = False
    #: How many peers may ask for a connection (``many``, as asked); 0: one.
    many: int = 0


def trust(ca_file: str) -> ssl.SSLContext:
    """A client TLS context that trusts only the certificates in ``ca_file``.

    :raises ServerUnreachableError: when the file does not load (exit 3, one line).
    """
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ServerUnreachableError(f"cannot use {ca_file!r} as CA bundle: {reason}") from None


def _certificate_error(exc: BaseException) -> str | None:
    """The verification failure behind a failed connection, if that is what it was
    (python-socketio re-raises its own error; the TLS one is in the chain)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        # aiohttp wraps the ssl module's error (and is one itself, without its fields).
        inner = getattr(seen, "certificate_error", seen)
        if isinstance(inner, ssl.SSLCertVerificationError):
            message = getattr(inner, "verify_message", None) or getattr(inner, "reason", None)
            return str(message or "verification failed")
        seen = seen.__cause__ or seen.__context__
    return None


#: How long finding out whether the server serves the web page may take.
PAGE_CHECK_SECONDS = 5.0


#: The fragment's prefix of a link that makes the page receive with the code (a
#: sender's); without it, the page sends with it (a receiver's).
RECEIVE_FRAGMENT = "receive/"


def page_link(url: str, code: str, *, receive: bool = False) -> str:
    """The link that opens the web page with ``code`` filled in: the page reads the
    code after ``#`` (a fragment, which browsers never send to a server).

    :param receive: the code is a sender's (``sfs send --print-code``): the page
        receives from it at once, rather than offering to send to it.
    """
    return f"{url.rstrip('/')}/#{RECEIVE_FRAGMENT if receive else ''}{code}"


def _session(proxy: Socks | None) -> aiohttp.ClientSession:
    """An HTTP client session: direct, or through the SOCKS5 proxy (--proxy)."""
    return aiohttp.ClientSession(connector=None if proxy is None else proxy.connector())


async def serves_page(url: str, *, ca_file: str | None = None, proxy: Socks | None = None) -> bool:
    """Whether the server at ``url`` serves the browser page at ``/`` (``sfs serve``
    does unless the page was never built; LAN mode's embedded server does not).

    Any failure is a no: the page link is a convenience, never a reason to stop.
    """
    ssl_context: ssl.SSLContext | bool = True if ca_file is None else trust(ca_file)
    failures: tuple[type[Exception], ...] = (
        TimeoutError,
        aiohttp.ClientError,
        OSError,
        ValueError,
        *proxy_errors(),
    )
    try:
        async with (
            asyncio.timeout(PAGE_CHECK_SECONDS),
            _session(proxy) as session,
            session.get(f"{url.rstrip('/')}/", ssl=ssl_context, allow_redirects=False) as reply,
        ):
            return reply.status == 200 and reply.content_type == "text/html"
    except failures:
        logger.debug("no web page at %s", url, exc_info=True)
        return False


async def why_unreachable(
    url: str, *, tls: ssl.SSLContext | bool, seconds: float, proxy: Socks | None = None
) -> str:
    """The one line that says why the Socket.IO connection to ``url`` failed.

    python-socketio says only "Connection error" whatever happened, so one plain HTTP
    request asks again: a name that does not resolve, nothing listening, and something
    that answers but is not ``sfs serve`` (a web server, another service) each need
    another fix.  Engine.IO answers a websocket request without its upgrade with 400.
    """
    base = url.rstrip("/")
    try:
        async with (
            asyncio.timeout(max(1.0, min(seconds, PAGE_CHECK_SECONDS))),
            _session(proxy) as session,
            session.get(
                f"{base}/socket.io/?EIO=4&transport=websocket", ssl=tls, allow_redirects=False
            ) as reply,
        ):
            status, kind = reply.status, reply.content_type
    except proxy_errors() as exc:
        return f"cannot reach the signaling server at {url} through the proxy {proxy}: {exc}"
    except aiohttp.ClientConnectorDNSError:
        host = yarl.URL(url).host or url
        return (
            f"cannot reach the signaling server at {url}: the name {host} does not resolve "
            "(a typo in --server / SFS_SERVER?)"
        )
    except aiohttp.ClientConnectorError as exc:
        return (
            f"cannot reach the signaling server at {url}: nothing answers at {exc.host}:"
            f"{exc.port} (is `sfs serve` running? see --server / SFS_SERVER)"
        )
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
        logger.debug("asking %s again over plain HTTP failed", url, exc_info=True)
    else:
        if status == 400 and kind == "text/plain":
            return (
                f"the signaling server at {url} answers, but its websocket connection "
                "failed (a proxy in front of it must pass websockets: Upgrade and "
                "Connection headers)"
            )
        return (
            f"something answers at {url} (HTTP {status}), but it is not `sfs serve`; "
            "check --server / SFS_SERVER"
        )
    return (
        f"cannot reach the signaling server at {url} (is `sfs serve` running? "
        "see --server / SFS_SERVER)"
    )


class SignalClient:
    """A connection to ``sfs serve``.

    :param url: the server's base URL, e.g. ``http://localhost:5000``; ``https://``
        verifies the server's certificate.
    :param connect_timeout: how long reaching the server may take, all of it: TCP,
        TLS, the websocket upgrade and joining the namespace.
    :param ca_file: certificates (PEM) to trust for ``https://`` instead of the
        system's store (a private CA).
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = SIGNAL_CONNECT_TIMEOUT_SECONDS,
        ca_file: str | None = None,
        proxy: Socks | None = None,
    ) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._proxy = proxy
        extra: dict[str, Any] = {}
        #: Through a proxy, engine.io's connections go through this session's connector.
        self._http: aiohttp.ClientSession | None = None
        if proxy is not None:
            self._http = _session(proxy)
            extra["http_session"] = self._http
        self._ssl: ssl.SSLContext | bool = True
        if ca_file is not None:
            self._ssl = trust(ca_file)
            extra["websocket_extra_options"] = {"ssl": self._ssl}
        # handle_sigint=False: engine.io would otherwise cancel every task on Ctrl-C,
        # aiortc's included, before sfs could tell the peer and clean up.
        self._sio = socketio.AsyncClient(reconnection=False, handle_sigint=False, **extra)
        self._events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._left = False
        self._leaving: asyncio.Future[None] | None = None
        for name in PUSHED_EVENTS:
            self._sio.on(name, self._handler(name))
        self._sio.on("disconnect", self._on_disconnect)

    def _handler(self, name: str) -> Any:
        async def handle(data: Any = None) -> None:
            if not isinstance(data, dict):
                logger.debug("dropping malformed %s event", name)
                return
            self._events.put_nowait((name, data))

        return handle

    async def _on_disconnect(self, *args: Any) -> None:
        self._events.put_nowait((_DISCONNECTED, {}))

    async def __aenter__(self) -> SignalClient:
        # python-socketio's wait_timeout covers only the namespace join: a server that
        # accepts the TCP connection and never answers the upgrade would hang us.
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._sio.connect(
                    self.url, transports=["websocket"], wait_timeout=self.connect_timeout
                )
        except TimeoutError:
            await self._abandon()
            raise ServerUnreachableError(
                f"the signaling server at {self.url} did not answer within "
                f"{self.connect_timeout:.0f} s (see --server / SFS_SERVER, --connect-timeout)"
            ) from None
        except proxy_errors() as exc:
            await self._abandon()
            raise ServerUnreachableError(
                f"cannot reach the signaling server at {self.url} through the proxy "
                f"{self._proxy}: {printable(str(exc), 200)}"
            ) from None
        except (socketio.exceptions.ConnectionError, OSError, ValueError) as exc:
            await self._abandon()
            untrusted = _certificate_error(exc)
            if untrusted is not None:
                raise ServerUnreachableError(
                    f"the signaling server at {self.url} has a certificate this machine does "
                    f"not trust ({untrusted}); for a private CA use --cacert FILE or "
                    "SFS_CA_BUNDLE"
                ) from exc
            raise ServerUnreachableError(
                await why_unreachable(
                    self.url, tls=self._ssl, seconds=self.connect_timeout, proxy=self._proxy
                )
            ) from exc
        return self

    async def _abandon(self) -> None:
        """Drop a connection attempt that was cut short."""
        try:
            async with asyncio.timeout(1):
                await self._sio.disconnect()
        except (TimeoutError, OSError, ValueError, socketio.exceptions.SocketIOError):
            logger.debug("dropping the half-open connection failed", exc_info=True)
        await self._close_http()

    async def _close_http(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.leave()
        assert self._leaving is not None
        try:
            async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
                await self._leaving
        except Exception:  # the transfer's outcome is what matters by now
            logger.debug("leaving the server did not end cleanly", exc_info=True)
        await self._close_http()

    def leave(self) -> None:
        """Disconnect, in the background; later server events are ignored (the transfer
        no longer needs them).

        Not waited for here, but when this client is closed: a clean disconnect waits
        for the server's answer (a round trip, 50 ms on a long link), and the first
        file byte need not.
        """
        if not self._left:
            self._left = True
            self._leaving = asyncio.ensure_future(self._sio.disconnect())

    async def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return the server's positive answer.

        :raises SignalingError: (or a subclass) when the server refuses.
        """
        try:
            reply = await self._sio.call(event, data, timeout=CALL_TIMEOUT_SECONDS)
        except socketio.exceptions.TimeoutError:
            raise SignalingError(f"the signaling server did not answer {event}") from None
        except socketio.exceptions.BadNamespaceError:
            raise ServerLostError() from None
        if not isinstance(reply, dict):
            raise SignalingError(f"the signaling server sent a malformed reply to {event}")
        if reply.get("ok") is True:
            return reply
        error = reply.get("error")
        if error == "not_paired":
            raise self._why_partner_left()
        if error == "unknown_peer":
            raise CodeNotFoundError()
        if error == "busy":
            raise RoomFullError()
        if error == "used_up":
            raise CodeUsedUpError()
        if error == "rate_limited":
            raise SignalingError("too many attempts; the server asks you to wait a while")
        message = reply.get("message")
        detail = message if isinstance(message, str) else str(error)
        raise SignalingError(f"the signaling server refused {event}: {detail[:200]}")

    def _why_partner_left(self) -> SfsError:
        """The pairing is gone: find the partner's reason among the events received."""
        while not self._events.empty():
            name, data = self._events.get_nowait()
            if name == "peer_aborted" and data.get("reason") == "wrong_code":
                return WrongCodeError()
        return PeerGoneError("the other side left before the connection was set up")

    async def register(self, rendezvous: str | None = None, *, many: int = 0) -> Registration:
        """Get a peer ID (*rendezvous*, if given: a session meeting again), the ICE
        servers and the relay that ``sfs serve`` recommends.

        :param many: let up to this many peers ask for a connection (``sfs send --many``).
        """
        payload: dict[str, Any] = {} if rendezvous is None else {"rendezvous": rendezvous}
        if many:
            payload["many"] = many
        try:
            reply = await self.call("register_peer", payload)
        except SignalingError as exc:
            # An older server refuses the key it does not know ("unexpected fields").
            if many and "unexpected fields" in str(exc):
                raise SignalingError(
                    "the signaling server is an older sfs: it cannot let one code serve "
                    "several receivers (--many)"
                ) from None
            raise
        peer_id = reply.get("peer_id")
        if not isinstance(peer_id, str):
            raise SignalingError("the signaling server sent no peer ID")
        servers_obj = reply.get("ice_servers", [])
        try:
            servers = tuple(IceServer.from_dict(s) for s in servers_obj)
        except (ValueError, TypeError) as exc:
            raise SignalingError(f"the signaling server sent bad ICE servers: {exc}") from exc
        relay = reply.get("relay")
        if relay is not None and not isinstance(relay, str):
            raise SignalingError("the signaling server sent a bad relay")
        if many and reply.get("many") != many:
            raise SignalingError(
                "the signaling server is an older sfs: it cannot let one code serve "
                "several receivers (--many)"
            )
        return Registration(peer_id, servers, relay, reply.get("rendezvous") is True, many=many)

    async def next_event(self) -> tuple[str, dict[str, Any]]:
        """The next pushed event, in the order received; ``("server_lost", {})`` when
        the connection to the server dropped (once: later calls wait for nothing)."""
        name, data = await self._events.get()
        if name == _DISCONNECTED:
            return SERVER_LOST, {}
        return name, data
