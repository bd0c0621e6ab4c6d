"""`--proxy socks5h://HOST:PORT`: everything sfs sends over TCP through a SOCKS5 proxy
(issue 30), with python-socks and aiohttp-socks, the libraries made for it.

What goes through it: the signaling connection (Socket.IO over aiohttp), the relay's
connection, and the direct TCP dials. Nothing listens, and nothing goes over UDP (no
WebRTC, no mDNS), so nothing leaves but through the proxy (sfs.setup decides that).
``socks5h://`` has the proxy resolve host names (DNS goes through it too, as for Tor);
``socks5://`` resolves them here, as curl does.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import aiohttp

SCHEMES = ("socks5", "socks5h")


@dataclass(frozen=True)
class Socks:
    """A SOCKS5 proxy: where, who (if it asks), and whether it resolves names."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    remote_dns: bool = True

    def __str__(self) -> str:  # for messages: never the password
        return f"socks5{'h' if self.remote_dns else ''}://{_bracketed(self.host)}:{self.port}"

    def connector(self) -> aiohttp.BaseConnector:
        """An aiohttp connector that connects through the proxy."""
        from aiohttp_socks import ProxyConnector, ProxyType

        # By keyword: aiohttp-socks changed the order of its arguments (0.9).
        return ProxyConnector(
            proxy_type=ProxyType.SOCKS5,
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            rdns=self.remote_dns,
        )

    async def connect(
        self,
        host: str,
        port: int,
        timeout: float,  # noqa: ASYNC109 (python-socks bounds its handshake with it)
    ) -> socket.socket:
        """A TCP connection to ``host:port`` through the proxy (a connected socket, for
        ``loop.create_connection(sock=...)``).

        :raises OSError: the proxy is not there, or refused (its reason in the text).
        """
        from python_socks import ProxyError, ProxyTimeoutError, ProxyType
        from python_socks.async_.asyncio import Proxy

        proxy = Proxy(
            proxy_type=ProxyType.SOCKS5,
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            rdns=self.remote_dns,
        )
        try:
            sock: socket.socket = await proxy.connect(host, port, timeout=timeout)
        except ProxyTimeoutError as exc:
            raise TimeoutError(f"the proxy {self} did not connect in time") from exc
        except ProxyError as exc:
            raise ConnectionRefusedError(f"the proxy {self} refused: {exc}") from exc
        return sock


def proxy_errors() -> tuple[type[Exception], ...]:
    """What the two libraries raise when the proxy is not there, times out or refuses
    (aiohttp-socks has its own classes, not all of them OSError)."""
    import aiohttp_socks
    import python_socks

    return tuple(
        getattr(module, name)
        for module in (python_socks, aiohttp_socks)
        for name in ("ProxyError", "ProxyConnectionError", "ProxyTimeoutError")
    )


def parse_proxy(url: str) -> Socks:
    """``socks5h://[USER:PASS@]HOST:PORT`` (or ``socks5://``).

    :raises ValueError: anything else, in words for the user.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} is not a proxy URL (socks5h://HOST:PORT)") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"{url!r}: sfs speaks SOCKS5 to a proxy: socks5h://HOST:PORT (the proxy "
            "resolves names) or socks5://HOST:PORT"
        )
    if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"{url!r}: give the proxy as socks5h://HOST:PORT")
    return Socks(
        parts.hostname,
        port,
        None if parts.username is None else unquote(parts.username),
        None if parts.password is None else unquote(parts.password),
        remote_dns=parts.scheme == "socks5h",
    )


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
